-- Example queries for analysts (DuckDB: `duckdb -readonly var/warehouse.duckdb`;
-- PostgreSQL: `psql "$THRNN_WAREHOUSE_URL"`). Always open the DuckDB file read-only: the nightly
-- publisher swaps in a new file and a read-write session would hold writes the swap discards.

-- Top-5 recommendations of one user tonight, and who ranked them (a model version or a baseline).
SELECT rank, item_name, item_key, score, source
FROM latest_recommendations
WHERE dataset = 'lastfm' AND user_key = 'user_000001' AND rank <= 5
ORDER BY rank;

-- How many users are at risk, per dataset.
SELECT dataset, COUNT(*) AS users_at_risk
FROM at_risk_users
GROUP BY dataset;

-- The 20 users most likely to churn, with when they were expected back.
SELECT user_key, last_session_end, expected_return_at, p_return_7d, churn_risk
FROM latest_churn_risk
WHERE dataset = 'lastfm'
ORDER BY churn_risk DESC, user_key
LIMIT 20;

-- Risk bucket mix night over night.
SELECT run_date, risk_bucket, COUNT(*) AS users
FROM churn_risk
WHERE dataset = 'lastfm'
GROUP BY run_date, risk_bucket
ORDER BY run_date, risk_bucket;

-- Model history: which night produced which version, was it promoted, what did the night serve?
SELECT run_date, model_version, recall_at_20, mrr_at_20, mae_hours, promoted, decision,
       scored_with_version, recommendations_source
FROM model_runs
WHERE dataset = 'lastfm'
ORDER BY run_date;

-- Nights that served a baseline's lists (no model qualified), beside the model they did not serve.
SELECT run_date, recommendations_source, best_baseline, baseline_first_item_recall_at_20,
       first_item_recall_at_20, promoted, serving
FROM model_runs
WHERE dataset = 'lastfm' AND recommendations_source = best_baseline
ORDER BY run_date;

-- Most recommended items tonight.
SELECT item_name, COUNT(*) AS users
FROM latest_recommendations
WHERE dataset = 'lastfm' AND rank <= 10
GROUP BY item_name
ORDER BY users DESC, item_name
LIMIT 20;
