-- Tables of the nightly THRNN pipeline (docs/design.md §6.3). One dialect for DuckDB and PostgreSQL.
-- Every table is keyed on (dataset, run_date): publishing replaces exactly one night of one
-- dataset inside one transaction; earlier nights are kept.
-- Applied by thrnn.pipeline.warehouse (statements are split on ';'). Columns added since the first
-- release (recommendations.source, model_runs.recommendations_source ... baseline_*) are added to
-- existing tables by thrnn.pipeline.warehouse.migrate on the next publish.

CREATE TABLE IF NOT EXISTS recommendations (
    run_date        DATE             NOT NULL,  -- the logical date of the DAG run
    dataset         VARCHAR          NOT NULL,  -- e.g. lastfm, reddit
    user_key        VARCHAR          NOT NULL,  -- the user's original key (stable across nights)
    rank            INTEGER          NOT NULL,  -- 1 = best
    item_key        VARCHAR          NOT NULL,  -- the item's original key (artist MBID, subreddit, ...)
    item_name       VARCHAR,                    -- display name (artist name, subreddit, ...)
    score           DOUBLE PRECISION NOT NULL,  -- model score (higher = better; comparable within a user)
    model_name      VARCHAR          NOT NULL,  -- registered model, thrnn-<dataset>
    model_version   INTEGER,                    -- registry version that produced the row; NULL: a baseline's list
    source          VARCHAR          NOT NULL,  -- who ranked: thrnn-<dataset>/<version>, or a baseline (e.g. blend)
    PRIMARY KEY (dataset, run_date, user_key, rank)
);

CREATE TABLE IF NOT EXISTS churn_risk (
    run_date              DATE             NOT NULL,
    dataset               VARCHAR          NOT NULL,
    user_key              VARCHAR          NOT NULL,
    last_session_end      TIMESTAMPTZ      NOT NULL,  -- UTC end of the user's last session
    elapsed_hours         DOUBLE PRECISION NOT NULL,  -- run_date minus last_session_end
    expected_return_hours DOUBLE PRECISION,           -- mean gap given not back yet and a return within the cut-off
    median_return_hours   DOUBLE PRECISION,           -- median gap given not back yet (the point prediction)
    expected_return_at    TIMESTAMPTZ,                -- last_session_end + expected_return_hours
    p_no_return           DOUBLE PRECISION,           -- P(never returns | not back yet)
    -- p_return_*: recalibrated on the four weeks before the night (docs/return_time.md)
    p_return_1d           DOUBLE PRECISION NOT NULL,  -- P(return within horizon 1 | not back yet)
    p_return_7d           DOUBLE PRECISION NOT NULL,  -- P(return within horizon 2 | not back yet)
    p_return_30d          DOUBLE PRECISION NOT NULL,  -- P(return within horizon 3 | not back yet)
    churn_risk            DOUBLE PRECISION NOT NULL,  -- 1 - p_return_30d
    risk_bucket           VARCHAR          NOT NULL,  -- low | medium | high
    model_name            VARCHAR          NOT NULL,
    model_version         INTEGER          NOT NULL,
    PRIMARY KEY (dataset, run_date, user_key)
);

CREATE TABLE IF NOT EXISTS model_runs (
    run_date                  DATE             NOT NULL,
    dataset                   VARCHAR          NOT NULL,
    model_name                VARCHAR          NOT NULL,
    model_version             INTEGER          NOT NULL,  -- version trained for this night
    mlflow_run_id             VARCHAR          NOT NULL,  -- MLflow run of that version
    recall_at_5               DOUBLE PRECISION,
    recall_at_10              DOUBLE PRECISION,
    recall_at_20              DOUBLE PRECISION,
    mrr_at_5                  DOUBLE PRECISION,
    mrr_at_10                 DOUBLE PRECISION,
    mrr_at_20                 DOUBLE PRECISION,
    first_item_recall_at_20   DOUBLE PRECISION,
    first_item_mrr_at_20      DOUBLE PRECISION,
    mae_hours                 DOUBLE PRECISION,  -- return-time MAE of the median prediction
    mae_hours_mean            DOUBLE PRECISION,  -- return-time MAE of the mean prediction
    n_targets                 BIGINT,
    n_gaps                    BIGINT,
    champion_version_before   INTEGER,           -- NULL while there is no champion
    promoted                  BOOLEAN          NOT NULL,
    decision                  VARCHAR          NOT NULL,  -- why promoted or not (failing metric, baseline, figures)
    scored_with_version       INTEGER          NOT NULL,  -- version behind churn_risk (and model recommendations)
    users                     BIGINT           NOT NULL,  -- users in the split
    train_events              BIGINT,
    test_events               BIGINT,
    recommendation_rows       BIGINT           NOT NULL,
    churn_rows                BIGINT           NOT NULL,
    sessionize_seconds        DOUBLE PRECISION,
    train_seconds             DOUBLE PRECISION,
    evaluate_seconds          DOUBLE PRECISION,
    score_seconds             DOUBLE PRECISION,
    recommendations_source    VARCHAR          NOT NULL,  -- recommendations.source of the night
    serving                   VARCHAR,           -- what the night publishes from which model or baseline, and why
    best_baseline             VARCHAR,           -- baseline best on first-item Recall@20 (NULL: none ran)
    baseline_recall_at_20     DOUBLE PRECISION,  -- its figures on tonight's split (same protocol as above)
    baseline_mrr_at_20        DOUBLE PRECISION,
    baseline_first_item_recall_at_20 DOUBLE PRECISION,
    baseline_first_item_mrr_at_20    DOUBLE PRECISION,
    PRIMARY KEY (dataset, run_date)
);
