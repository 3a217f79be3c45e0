"""The publish and check tasks on hand-made scores and task states, on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from thrnn.pipeline import states as S
from thrnn.pipeline import tasks
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError
from thrnn.pipeline.params import validate_params
from thrnn.pipeline.settings import PipelineSettings

from .conftest import night_frames

D = dt.date(2026, 2, 1)
METRICS = {"recall@5": 0.1, "recall@10": 0.2, "recall@20": 0.3, "mrr@5": 0.05, "mrr@10": 0.06, "mrr@20": 0.07,
           "first_item_recall@20": 0.4, "first_item_mrr@20": 0.08, "mae_hours": 41.5, "mae_hours_mean": 55.0,
           "n_targets": 900, "n_gaps": 60}
BLEND = {"recall@20": 0.25, "mrr@20": 0.06, "first_item_recall@20": 0.35, "first_item_mrr@20": None}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request, tmp_path) -> PipelineSettings:
    env = {"THRNN_HOME": str(tmp_path)}
    if request.param == "postgres":
        env["THRNN_WAREHOUSE_URL"] = request.getfixturevalue("pg_url")
    return PipelineSettings.from_env(env)


def _night_on_disk(settings: PipelineSettings) -> None:
    paths = settings.run_paths("demo", D)
    frames = night_frames(D, version=2)
    paths.scores.mkdir(parents=True)
    frames[W.RECOMMENDATIONS].to_parquet(paths.scores / "recommendations.parquet")
    frames[W.CHURN_RISK].to_parquet(paths.scores / "churn_risk.parquet")
    S.SessionizeState(seconds=10.0).save(paths)
    S.ValidateState(figures={"users": 2, "train_events": 30, "test_events": 8}).save(paths)
    S.TrainState(mlflow_run_id="abc", fingerprint="f", seconds=20.0).save(paths)
    S.EvaluateState(metrics=METRICS, seconds=3.0, fallback_baseline="blend",
                    baseline_figures={"blend": BLEND, "markov1": {**BLEND, "mrr@20": 0.5}}).save(paths)
    S.RegisterState(version=2, run_id="abc", promoted=False, champion_before=1,
                    reason="worse than champion v1: ...", seconds=1.0).save(paths)
    S.ScoreState(scored_with_version=2, users=2, recommendation_rows=6, churn_rows=2, seconds=4.0,
                 recommendations_source="thrnn-demo/2", recommendation_users=2,
                 serving="champion v2 keeps serving").save(paths)


def test_publish_then_check(settings):
    params = validate_params({"dataset": "demo", "top_k": 3})
    _night_on_disk(settings)
    out = tasks.publish(settings, params, D)
    assert out.rows == {W.RECOMMENDATIONS: 6, W.CHURN_RISK: 2, W.MODEL_RUNS: 1}
    checked = tasks.check(settings, params, D)
    assert (checked.recommendation_rows, checked.churn_rows, checked.users) == (6, 2, 2)
    assert S.CheckState.load(settings.run_paths("demo", D)) == checked  # the state file holds what it returned
    row = W.connect(settings.warehouse).read_night(W.MODEL_RUNS, "demo", D).iloc[0].to_dict()
    row["run_date"] = str(row["run_date"])[:10]
    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN -> None
    assert row == {
        "run_date": "2026-02-01", "dataset": "demo", "model_name": "thrnn-demo", "model_version": 2,
        "mlflow_run_id": "abc", "recall_at_5": 0.1, "recall_at_10": 0.2, "recall_at_20": 0.3, "mrr_at_5": 0.05,
        "mrr_at_10": 0.06, "mrr_at_20": 0.07, "first_item_recall_at_20": 0.4, "first_item_mrr_at_20": 0.08,
        "mae_hours": 41.5, "mae_hours_mean": 55.0, "n_targets": 900, "n_gaps": 60, "champion_version_before": 1,
        "promoted": False, "decision": "worse than champion v1: ...", "scored_with_version": 2, "users": 2,
        "train_events": 30, "test_events": 8, "recommendation_rows": 6, "churn_rows": 2,
        "sessionize_seconds": 10.0, "train_seconds": 20.0, "evaluate_seconds": 3.0, "score_seconds": 4.0,
        "recommendations_source": "thrnn-demo/2", "serving": "champion v2 keeps serving", "best_baseline": "blend",
        "baseline_recall_at_20": 0.25, "baseline_mrr_at_20": 0.06, "baseline_first_item_recall_at_20": 0.35,
        "baseline_first_item_mrr_at_20": None,
    }
    # the check task holds the night to the params: top_k 2 < the 3 published ranks
    with pytest.raises(ContractError, match=r"ranks are not 1..n \(n <= 2\)"):
        tasks.check(settings, validate_params({"dataset": "demo", "top_k": 2}), D)


def test_run_date_of_context():
    class Run:
        logical_date = None
        run_after = dt.datetime(2026, 3, 4, 5, tzinfo=dt.UTC)

    assert tasks.run_date_of({"logical_date": dt.datetime(2026, 1, 2, 2, tzinfo=dt.UTC)}) == dt.date(2026, 1, 2)
    assert tasks.run_date_of({"logical_date": None, "dag_run": Run()}) == dt.date(2026, 3, 4)
    with pytest.raises(ValueError, match="neither a logical date nor run_after"):
        tasks.run_date_of({})


def test_states_go_through_json_as_xcom_does(tmp_path):
    """Every state survives to_dict -> JSON -> from_dict; a register state of an older release (no
    candidate, no serving) gets the candidate and the serving version its decision implies."""
    import json

    paths = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)}).run_paths("demo", D)
    reg = S.RegisterState(version=3, run_id="r", promoted=True, reason="not worse", champion_before=2,
                          serving={"version": 3, "baseline": None, "reason": "tonight's v3"}, seconds=1.5)
    assert S.RegisterState.from_dict(json.loads(json.dumps(reg.to_dict()))) == reg
    reg.save(paths)
    assert S.RegisterState.load(paths) == reg
    old = {"version": 3, "run_id": "r", "promoted": False, "reason": "worse", "champion_before": 2, "gone": 1}
    assert S.RegisterState.from_dict(old).candidate is None
    assert S.RegisterState.from_dict(old).served() == {
        "version": 2, "baseline": None, "reason": "v2 (the night's recorded decision)"}
    assert S.RegisterState.from_dict({**old, "promoted": True}).candidate == 3
    assert S.RegisterState.from_dict({**old, "reason": "backfill for 2026-02-01"}).served()["version"] == 3
    bt = S.BacktestState(skipped=True, reason="off")
    assert S.BacktestState.from_dict(bt.to_dict()) == bt and set(S.STATES) == {
        "sessionize", "validate", "train", "evaluate", "register", "score", "publish", "check", "promote",
        "backtest"}
    with pytest.raises(FileNotFoundError, match="task 'score' has not run for this date"):
        S.ScoreState.load(paths)
