"""The gate against the best baseline: pure rules, the fallback lists, the tables, and real nights.

Real nights run the task functions (validate ... check) on a hand-made split without Spark, with a
real MLflow registry on SQLite and a real DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

from contract import columns as C
from thrnn.baselines.session_aware import baseline_recommendations, next_session_lists
from thrnn.io import Split, read_split, split_from_sessions
from thrnn.pipeline import registry as R
from thrnn.pipeline import tasks
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError, check_published
from thrnn.pipeline.params import validate_params
from thrnn.pipeline.settings import PipelineSettings
from thrnn.pipeline.states import STATES

from .conftest import GATE_CONF, GATE_DATASET, gate_sessions, night_frames

H = 3600.0
T0 = 1_700_000_000.0
# two baselines: markov1 best on next item, blend on first item (blend lacks MRR@20: it does not count)
MARKOV = {"recall@20": 0.60, "mrr@20": 0.40, "first_item_recall@20": 0.30, "first_item_mrr@20": 0.10}
BLEND = {"recall@20": 0.50, "mrr@20": None, "first_item_recall@20": 0.45, "first_item_mrr@20": 0.20}
BASES = {"markov1": MARKOV, "blend": BLEND}
AT_BEST = {"recall@20": 0.60, "mrr@20": 0.40, "first_item_recall@20": 0.45, "first_item_mrr@20": 0.20,
           "mae_hours": 40.0}
CHAMP = {"recall@20": 0.55, "mae_hours": 45.0}


# ------------------------------------------------------------------------------------------- decide
def test_decide_promotes_a_model_as_good_as_the_best_baseline():
    d = R.decide(AT_BEST, None, baselines=BASES)
    assert (d.promote, d.below_baseline) == (True, ())
    assert d.reason == ("first model: no champion yet and at least as good as the best baselines (recall@20 "
                        "0.6000 vs markov1 0.6000, mrr@20 0.4000 vs markov1 0.4000, first_item_recall@20 0.4500 vs "
                        "blend 0.4500, first_item_mrr@20 0.2000 vs blend 0.2000)")
    d = R.decide(AT_BEST, CHAMP, champion_version=3, baselines=BASES)
    assert d.promote and d.reason.startswith("not worse than champion v3 (recall@20 0.6000 vs 0.55, mae_hours 40.0 "
                                             "vs 45.0); at least as good as the best baselines (recall@20")


@pytest.mark.parametrize(("metric", "text"), [
    ("recall@20", "recall@20 0.5999 < markov1 0.6000 - tolerance 0"),
    ("mrr@20", "mrr@20 0.3999 < markov1 0.4000 - tolerance 0"),
    ("first_item_recall@20", "first_item_recall@20 0.4499 < blend 0.4500 - tolerance 0"),
    ("first_item_mrr@20", "first_item_mrr@20 0.1999 < blend 0.2000 - tolerance 0"),
])
def test_decide_refuses_per_metric_naming_the_baseline_and_both_figures(metric, text):
    new = {**AT_BEST, metric: AT_BEST[metric] - 0.0001}
    d = R.decide(new, None, baselines=BASES)
    assert (d.promote, d.below_baseline) == (False, (metric,))
    assert d.reason == f"below the best baseline: {text} (no champion yet)"
    # the champion rule is applied beside it (both reasons), and a champion does not rescue the model
    d = R.decide(new, CHAMP, champion_version=3, baselines=BASES)
    assert (d.promote, d.reason) == (False, f"below the best baseline: {text}")
    d = R.decide({**new, "mae_hours": 50.0}, CHAMP, champion_version=3, baselines=BASES)
    assert d.reason == (f"below the best baseline: {text}; worse than champion v3: mae_hours 50.00 > champion "
                        f"45.00 x (1 + 0)")


def test_decide_baseline_tolerance_is_absolute():
    new = {**AT_BEST, "first_item_recall@20": 0.44}
    assert R.decide(new, None, baselines=BASES, baseline_tolerance=0.01).promote
    d = R.decide({**new, "first_item_recall@20": 0.4399}, None, baselines=BASES, baseline_tolerance=0.01)
    assert d.reason == "below the best baseline: first_item_recall@20 0.4399 < blend 0.4500 - tolerance 0.01 " \
                       "(no champion yet)"
    with pytest.raises(ValueError, match="tolerances"):
        R.decide(AT_BEST, None, baselines=BASES, baseline_tolerance=-0.1)


def test_decide_missing_metrics():
    # a metric no baseline has does not count: blend's missing MRR@20 leaves markov1's; none -> no rule
    only_blend = {"blend": BLEND}
    assert R.best_baselines(only_blend) == {"recall@20": {"name": "blend", "value": 0.5},
                                            "first_item_recall@20": {"name": "blend", "value": 0.45},
                                            "first_item_mrr@20": {"name": "blend", "value": 0.2}}
    assert R.decide({**AT_BEST, "mrr@20": 0.0}, None, baselines=only_blend).promote
    assert R.decide({"recall@20": 0.0}, None, baselines={"hawkes": {"mae_hours": 3.0}}).reason == \
        "first model: no champion yet"
    # a metric the model lacks (or NaN) fails when a baseline has it
    d = R.decide({**AT_BEST, "first_item_mrr@20": float("nan")}, None, baselines=BASES)
    assert (d.promote, d.below_baseline) == (False, ("first_item_mrr@20",))
    assert d.reason == "below the best baseline: no first_item_mrr@20 (best baseline blend 0.2000) (no champion yet)"


def test_decide_forced_and_backfill_and_baseline_events():
    worst = {"recall@20": 0.0, "mrr@20": 0.0, "first_item_recall@20": 0.0, "first_item_mrr@20": 0.0}
    d = R.decide(worst, CHAMP, champion_version=3, baselines=BASES, force=True)
    assert (d.promote, d.reason) == (True, "forced promotion (force_promote=true)")
    d = R.decide(AT_BEST, CHAMP, champion_version=3, baselines=BASES, new_run_date=dt.date(2026, 1, 1),
                 champion_run_date=dt.date(2026, 1, 2))
    assert not d.promote and d.reason.startswith("backfill")
    # the champion comparison reads `new`, the baseline comparison the figures on the baselines' events
    d = R.decide({"recall@20": 0.9, "mae_hours": 1.0}, CHAMP, champion_version=3, baselines=BASES,
                 new_on_baseline_events={**AT_BEST, "recall@20": 0.1})
    assert d.reason == "below the best baseline: recall@20 0.1000 < markov1 0.6000 - tolerance 0"


# ---------------------------------------------------------------------------------- fallback choice
def test_fallback_is_the_best_first_item_recall_with_ties_in_a_fixed_order():
    f, m = "first_item_recall@20", "first_item_mrr@20"
    assert R.fallback_baseline(BASES) == "blend"
    tied = {"sknn": {f: 0.5}, "blend": {f: 0.5}, "user_decay": {f: 0.5}, "markov1": {f: 0.4}}
    assert R.fallback_baseline(tied) == "user_decay"  # user_decay precedes blend and sknn
    # equal Recall@20: the better MRR@20 first (a missing one is worst), then the order
    tied = {"user_recency": {f: 1.0, m: 0.33}, "user_decay": {f: 1.0, m: 1.0}, "blend": {f: 1.0, m: 1.0}}
    assert R.fallback_baseline(tied) == "user_decay"
    assert R.fallback_baseline({"most_popular": {f: 0.5}, "sknn": {f: 0.5, m: 0.0}}) == "sknn"
    assert R.fallback_baseline({"zeta": {f: 0.5}, "alpha": {f: 0.5}, "most_popular": {f: 0.5}}) == "most_popular"
    assert R.fallback_baseline({"zeta": {f: 0.5}, "alpha": {f: 0.5}}) == "alpha"  # unknown ones by name
    assert R.fallback_baseline({"sknn": {f: 0.51}, "most_popular": {f: 0.5}}) == "sknn"
    assert R.fallback_baseline({"markov1": {f: None, m: 0.3}, "hawkes": {}}) is None
    assert R.fallback_baseline({}) is None


def test_choose_serving():
    kw = {"version": 5, "baselines": BASES}
    assert R.choose_serving(promoted=True, champion_before=None, champion_on_tonight=None, **kw) == \
        R.Serving(5, None, "tonight's v5 is champion")
    s = R.choose_serving(promoted=False, champion_before=None, champion_on_tonight=None, **kw)
    assert s == R.Serving(5, "blend", "no model qualifies (no champion): recommendations from baseline blend; "
                                      "churn_risk from tonight's v5 (not promoted)")
    below = {**AT_BEST, "first_item_recall@20": 0.40}
    s = R.choose_serving(promoted=False, champion_before=3, champion_on_tonight=below, **kw)
    assert s == R.Serving(3, "blend", "no model qualifies (champion v3 on tonight's split below the best baseline: "
                                      "first_item_recall@20 0.4000 < blend 0.4500 - tolerance 0): recommendations "
                                      "from baseline blend; churn_risk from champion v3")
    s = R.choose_serving(promoted=False, champion_before=3, champion_on_tonight=below, baseline_tolerance=0.05, **kw)
    assert (s.version, s.baseline) == (3, None)
    assert R.choose_serving(promoted=False, champion_before=3, champion_on_tonight=None, **kw) == \
        R.Serving(3, None, "champion v3 keeps serving")
    s = R.choose_serving(promoted=False, champion_before=None, champion_on_tonight=None, version=5, baselines={})
    assert (s.version, s.baseline) == (5, None)


def test_baseline_figures_keep_ranking_baselines_only():
    results = {"markov1": {**MARKOV, "recall@5": 0.2, "params": {}},
               "blend": {**BLEND, "first_item_mrr@20": float("nan")},
               "hawkes": {"mae_hours": 30.0, "recall@20": None}}
    assert R.baseline_figures(results) == {
        "markov1": MARKOV, "blend": {**BLEND, "first_item_mrr@20": None}}


# ------------------------------------------------------------------------------ lists of a baseline
def _tiny() -> Split:
    """Two sessions per user in train, one in test. Popularity (train): item 1: 5, 2: 3, 3: 3, 4: 1, 5: 0;
    session-to-session transitions (train): 2 -> 3 (user 0), 2 -> 1 (user 1), 1 -> 2 (user 2)."""
    s = lambda items, t: [(i, t + 60.0 * j) for j, i in enumerate(items)]  # noqa: E731
    return split_from_sessions({
        0: [s([1, 2], T0), s([3, 1], T0 + 10 * H), s([5, 4], T0 + 20 * H)],
        1: [s([3, 2], T0), s([1, 3], T0 + 10 * H), s([4, 2], T0 + 20 * H)],
        2: [s([4, 1], T0), s([2, 1], T0 + 10 * H), s([2, 5], T0 + 20 * H)],
    }, train_fraction=0.67)


def test_lists_of_most_popular_and_markov1():
    split = _tiny()
    pop = next_session_lists(split, "most_popular", 3)
    # popularity 5, 3, 3 (ties by item id) for every user; score = share of the 12 training events
    assert pop[C.ITEM_ID].tolist() == [1, 2, 3] * 3 and pop[C.USER_ID].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert pop["rank"].tolist() == [1, 2, 3] * 3
    np.testing.assert_allclose(pop["score"], [5 / 12, 3 / 12, 3 / 12] * 3, rtol=1e-6)
    mk = next_session_lists(split, "markov1", 3)
    # the last item of each user's history (incl. test): 4, 2, 5. Out of 4: no transition -> popularity;
    # out of 2: 2 -> 3 and 2 -> 1 once each -> tie by popularity (1 before 3), then item 2
    assert mk.groupby(C.USER_ID)[C.ITEM_ID].apply(list).to_dict() == {0: [1, 2, 3], 1: [1, 3, 2], 2: [1, 2, 3]}
    np.testing.assert_allclose(mk[mk[C.USER_ID] == 1]["score"], [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="no next-session lists"):
        next_session_lists(split, "hawkes", 3)
    recs = baseline_recommendations(split, "markov1", 2)
    assert recs.columns.tolist() == [C.USER_KEY, "rank", C.ITEM_KEY, C.ITEM_NAME, "score"]
    assert recs[recs[C.USER_KEY] == "user-1"][C.ITEM_NAME].tolist() == ["Item 1", "Item 3"]


# ----------------------------------------------------------------------------------------- tables
OLD_DDL = """
CREATE TABLE recommendations (run_date DATE NOT NULL, dataset VARCHAR NOT NULL, user_key VARCHAR NOT NULL,
    rank INTEGER NOT NULL, item_key VARCHAR NOT NULL, item_name VARCHAR, score DOUBLE PRECISION NOT NULL,
    model_name VARCHAR NOT NULL, model_version INTEGER NOT NULL, PRIMARY KEY (dataset, run_date, user_key, rank));
CREATE TABLE model_runs (run_date DATE NOT NULL, dataset VARCHAR NOT NULL, model_name VARCHAR NOT NULL,
    model_version INTEGER NOT NULL, mlflow_run_id VARCHAR NOT NULL, recall_at_5 DOUBLE PRECISION,
    recall_at_10 DOUBLE PRECISION, recall_at_20 DOUBLE PRECISION, mrr_at_5 DOUBLE PRECISION,
    mrr_at_10 DOUBLE PRECISION, mrr_at_20 DOUBLE PRECISION, first_item_recall_at_20 DOUBLE PRECISION,
    first_item_mrr_at_20 DOUBLE PRECISION, mae_hours DOUBLE PRECISION, mae_hours_mean DOUBLE PRECISION,
    n_targets BIGINT, n_gaps BIGINT, champion_version_before INTEGER, promoted BOOLEAN NOT NULL,
    decision VARCHAR NOT NULL, scored_with_version INTEGER NOT NULL, users BIGINT NOT NULL, train_events BIGINT,
    test_events BIGINT, recommendation_rows BIGINT NOT NULL, churn_rows BIGINT NOT NULL,
    sessionize_seconds DOUBLE PRECISION, train_seconds DOUBLE PRECISION, evaluate_seconds DOUBLE PRECISION,
    score_seconds DOUBLE PRECISION, PRIMARY KEY (dataset, run_date));
CREATE VIEW latest_recommendations AS SELECT r.* FROM recommendations AS r;
INSERT INTO recommendations VALUES ('2026-01-01', 'demo', 'u1', 1, 'i1', 'Item 1', 1.0, 'thrnn-demo', 7);
INSERT INTO model_runs (run_date, dataset, model_name, model_version, mlflow_run_id, promoted, decision,
    scored_with_version, users, recommendation_rows, churn_rows)
    VALUES ('2026-01-01', 'demo', 'thrnn-demo', 8, 'r', FALSE, 'old', 7, 1, 1, 0)
"""


def baseline_night(day: dt.date, name: str = "blend", **kw) -> dict[str, pd.DataFrame]:
    """A night that served baseline ``name``'s lists (churn_risk from v4)."""
    frames = night_frames(day, version=4, **kw)
    rec = frames[W.RECOMMENDATIONS]
    frames[W.RECOMMENDATIONS] = rec.assign(source=name, model_version=pd.Series(pd.NA, index=rec.index, dtype="Int64"))
    frames[W.MODEL_RUNS] = frames[W.MODEL_RUNS].assign(recommendations_source=name, best_baseline=name,
                                                       baseline_first_item_recall_at_20=0.5)
    return frames


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_warehouse(request, tmp_path) -> W.Warehouse:
    """A warehouse created by the first release's DDL, holding one night."""
    if request.param == "duckdb":
        path = tmp_path / "w.duckdb"
        con = duckdb.connect(str(path))
        con.execute(OLD_DDL)
        con.close()
        return W.connect(f"duckdb://{path}")
    import psycopg

    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url) as conn:
        for stmt in filter(str.strip, OLD_DDL.split(";")):
            conn.execute(stmt)
    return W.connect(url)


def test_existing_warehouses_get_the_new_columns(old_warehouse):
    wh = old_warehouse
    day = dt.date(2026, 1, 2)
    wh.publish("demo", day, baseline_night(day))
    wh.publish("demo", day, baseline_night(day))  # idempotent: the migration ran once
    old = wh.read_night(W.RECOMMENDATIONS, "demo", dt.date(2026, 1, 1))
    assert old[["model_version", "source"]].values.tolist() == [[7, "thrnn-demo/7"]]
    runs = wh.read_night(W.MODEL_RUNS, "demo", dt.date(2026, 1, 1))
    assert runs["recommendations_source"].tolist() == ["thrnn-demo/7"] and runs["best_baseline"].isna().all()
    new = wh.read_night(W.RECOMMENDATIONS, "demo", day)
    assert set(new["source"]) == {"blend"} and new["model_version"].isna().all()
    latest = wh.query("SELECT DISTINCT source FROM latest_recommendations WHERE run_date = ?", [day])
    assert latest.iloc[:, 0].tolist() == ["blend"]
    nullable = wh.query("SELECT column_name, is_nullable FROM information_schema.columns WHERE table_schema = "
                        "current_schema() AND table_name = 'recommendations' AND column_name IN "
                        "('model_version', 'source') ORDER BY column_name")
    assert nullable.values.tolist() == [["model_version", "YES"], ["source", "NO"]]
    assert check_published(wh, "demo", day, expected_users=2, top_k=3, risk_thresholds=(0.3, 0.7),
                           expected_source="blend")["users"] == 2


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_example_queries_run_on_a_model_night_and_a_baseline_night(kind, request, tmp_path):
    wh = W.connect(f"duckdb://{tmp_path / 'w.duckdb'}" if kind == "duckdb" else request.getfixturevalue("pg_url"))
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    wh.publish("lastfm", d1, night_frames(d1, dataset="lastfm", users=("user_000001", "u2")))
    wh.publish("lastfm", d2, baseline_night(d2, dataset="lastfm", users=("user_000001", "u2")))
    text = "\n".join(line.split("--", 1)[0] for line in (W.SQL_DIR / "queries" / "examples.sql").read_text().splitlines())
    results = [wh.query(stmt) for stmt in (s.strip() for s in text.split(";")) if stmt]
    assert results[0][["rank", "source"]].values.tolist() == [[1, "blend"], [2, "blend"], [3, "blend"]]
    served = results[-2]  # the nights that served a baseline
    assert served[["recommendations_source", "best_baseline"]].values.tolist() == [["blend", "blend"]]
    assert pd.Timestamp(served["run_date"].iloc[0]).date() == d2


def test_migration_is_a_no_op_on_current_tables():
    con = duckdb.connect()
    for stmt in W.schema_statements():
        con.execute(stmt)
    assert W.migrate(lambda sql, params: con.execute(sql, list(params)).fetchall()) == []


def test_check_holds_the_source_to_the_night(tmp_path):
    wh = W.connect(f"duckdb://{tmp_path / 'w.duckdb'}")
    day = dt.date(2026, 1, 3)
    frames = baseline_night(day)
    rec = frames[W.RECOMMENDATIONS]
    rec.loc[0, "source"] = "thrnn-demo/9"  # a model's source on a row without a version
    rec.loc[1, "source"] = "sknn"
    frames[W.MODEL_RUNS] = frames[W.MODEL_RUNS].assign(recommendations_source="markov1")
    wh.publish("demo", day, frames)
    with pytest.raises(ContractError) as err:
        check_published(wh, "demo", day, expected_users=2, top_k=3, risk_thresholds=(0.3, 0.7),
                        expected_source="blend")
    text = str(err.value)
    assert len(err.value.problems) == 4, text
    for part in ("recommendations mix 3 sources ['blend', 'sknn', 'thrnn-demo/9']",
                 "1 recommendation row(s) whose source does not match their model version",
                 "recommendations come from ['blend', 'sknn', 'thrnn-demo/9'], expected 'blend'",
                 "model_runs.recommendations_source 'markov1' is not the published source"):
        assert part in text


# ------------------------------------------------------------------------------------ real nights
DATASET, CONF = GATE_DATASET, GATE_CONF
D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def _night(settings: PipelineSettings, conf: dict, day: dt.date) -> dict:
    params = validate_params(conf)
    for step in (tasks.validate, tasks.train, tasks.evaluate, tasks.register, tasks.score, tasks.publish,
                 tasks.check, tasks.promote):
        step(settings, params, day)
    paths = settings.run_paths(DATASET, day)
    return {t: STATES[t].load(paths) for t in ("evaluate", "register", "score", "promote")}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1 (weak model, no champion), night 2 (tolerance 1: the model qualifies), night 3 (weak
    model against champion v2), all on the same split; returns (settings, {day: states})."""
    import mlflow

    home = tmp_path_factory.mktemp("gate-home")
    settings = PipelineSettings.from_env({"THRNN_HOME": str(home), "THRNN_DEVICE": "cpu"})
    split_from_sessions(gate_sessions(), settings.run_paths(DATASET, D1).data)
    for day in (D2, D3):
        shutil.copytree(settings.run_paths(DATASET, D1).data, settings.run_paths(DATASET, day).data)
    try:
        states = {D1: _night(settings, CONF, D1), D2: _night(settings, {**CONF, "baseline_tolerance": 1.0}, D2),
                  D3: _night(settings, CONF, D3)}
        yield settings, states
    finally:
        mlflow.set_tracking_uri(None)


def _published(settings: PipelineSettings, day: dt.date) -> dict[str, pd.DataFrame]:
    wh = W.connect(settings.warehouse)
    return {t: wh.read_night(t, DATASET, day) for t in W.TABLE_COLUMNS}


def _expected_lists(settings: PipelineSettings, day: dt.date, name: str, params: dict | None) -> pd.DataFrame:
    from thrnn.baselines.session_aware import next_session_lists

    split = read_split(settings.run_paths(DATASET, day).data)
    lists = next_session_lists(split, name, CONF["top_k"], params)
    lists[C.USER_KEY] = lists[C.USER_ID].map(split.users.set_index(C.USER_ID)[C.USER_KEY])
    lists[C.ITEM_KEY] = lists[C.ITEM_ID].map(split.items.set_index(C.ITEM_ID)[C.ITEM_KEY])
    return lists.sort_values([C.USER_KEY, "rank"]).reset_index(drop=True)


@pytest.mark.slow
def test_a_weak_model_first_night_publishes_the_best_baseline(nights):
    from thrnn.baselines.session_aware import SESSION_AWARE

    settings, states = nights
    ev, reg, sc = states[D1]["evaluate"], states[D1]["register"], states[D1]["score"]
    best = ev.fallback_baseline
    assert best in SESSION_AWARE
    assert ev.baseline_figures[best]["first_item_recall@20"] == ev.best_baseline["first_item_recall@20"]["value"]
    # the evaluate state: four figures of every ranking baseline, the best per metric
    assert {"most_popular", "markov1", *SESSION_AWARE} <= set(ev.baseline_figures)
    for metric, top in ev.best_baseline.items():
        assert top["value"] == max(f[metric] for n, f in ev.baseline_figures.items() if n in ev.gate_baselines)
    # nothing promoted: the decision names the failing metric, the baseline and both figures
    first = ev.metrics["first_item_recall@20"]
    ref = ev.baseline_figures[best]["first_item_recall@20"]
    assert first < ref and not reg.promoted and reg.champion_after is None
    assert reg.reason.startswith("below the best baseline: ")
    assert f"first_item_recall@20 {first:.4f} < {best} {ref:.4f} - tolerance 0" in reg.reason
    assert reg.serving == {"version": 1, "baseline": best, "reason": (
        f"no model qualifies (no champion): recommendations from baseline {best}; churn_risk from tonight's v1 "
        f"(not promoted)")}
    # recommendations: the baseline's next-session lists, keyed; churn_risk from tonight's v1
    t = _published(settings, D1)
    rec = t[W.RECOMMENDATIONS]
    assert set(rec["source"]) == {best} and rec["model_version"].isna().all()
    want = _expected_lists(settings, D1, best, ev.baseline_params.get(best))
    assert rec[[C.USER_KEY, "rank", C.ITEM_KEY]].values.tolist() == want[[C.USER_KEY, "rank", C.ITEM_KEY]].values.tolist()
    np.testing.assert_allclose(rec["score"], want["score"], rtol=1e-6)
    assert set(t[W.CHURN_RISK]["model_version"]) == {1} and len(t[W.CHURN_RISK]) == 40
    run = t[W.MODEL_RUNS].iloc[0]
    assert (run["model_version"], bool(run["promoted"]), run["scored_with_version"]) == (1, False, 1)
    assert run["decision"] == reg.reason and run["recommendations_source"] == best
    assert run["serving"] == reg.serving["reason"] and run["best_baseline"] == best
    for key, column in W.BASELINE_FIGURE_COLUMNS.items():
        assert run[column] == pytest.approx(ev.baseline_figures[best][key])
    assert sc.recommendations_source == best and sc.recommendation_users == 40
    # what the table serves is at least as good as Markov-1 and most-popular on first-item Recall@20
    served = ev.baseline_figures[best]["first_item_recall@20"]
    assert served >= max(ev.baseline_figures[n]["first_item_recall@20"] for n in ("markov1", "most_popular"))

    # a re-run of score + publish + check gives the same rows
    params = validate_params(CONF)
    for step in (tasks.register, tasks.score, tasks.publish, tasks.check):
        step(settings, params, D1)
    again = _published(settings, D1)
    pd.testing.assert_frame_equal(again[W.RECOMMENDATIONS], rec)
    pd.testing.assert_frame_equal(again[W.CHURN_RISK], t[W.CHURN_RISK])


@pytest.mark.slow
def test_a_qualifying_model_publishes_its_own_lists(nights):
    settings, states = nights
    reg = states[D2]["register"]
    # register leaves the alias; the last task moves it once the night is published and checked
    assert (reg.version, reg.promoted, reg.champion_before, reg.champion_after) == (2, True, None, None)
    assert (states[D2]["promote"].moved, states[D2]["promote"].champion_after) == (True, 2)
    assert reg.reason.startswith("first model: no champion yet and at least as good as the best baselines")
    t = _published(settings, D2)
    assert set(t[W.RECOMMENDATIONS]["source"]) == {"thrnn-gate/2"}
    assert set(t[W.RECOMMENDATIONS]["model_version"]) == {2} and set(t[W.CHURN_RISK]["model_version"]) == {2}
    run = t[W.MODEL_RUNS].iloc[0]
    assert (run["recommendations_source"], bool(run["promoted"])) == ("thrnn-gate/2", True)
    assert run["serving"] == "tonight's v2 is champion"


@pytest.mark.slow
def test_a_champion_below_the_baselines_serves_churn_only(nights):
    settings, states = nights
    ev, reg = states[D3]["evaluate"], states[D3]["register"]
    best = ev.fallback_baseline
    versus = ev.champion_head_to_head
    assert versus["champion_version"] == 2  # v2 re-scored on tonight's split
    assert (reg.version, reg.promoted, reg.champion_before, reg.champion_after) == (3, False, 2, 2)
    assert reg.serving["version"] == 2 and reg.serving["baseline"] == best
    assert reg.serving["reason"].startswith("no model qualifies (champion v2 on tonight's split below the best "
                                               "baseline: ")
    t = _published(settings, D3)
    assert set(t[W.RECOMMENDATIONS]["source"]) == {best} and set(t[W.CHURN_RISK]["model_version"]) == {2}
    run = t[W.MODEL_RUNS].iloc[0]
    assert (run["model_version"], run["scored_with_version"], run["recommendations_source"]) == (3, 2, best)
