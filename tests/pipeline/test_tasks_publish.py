"""The publish and check tasks on hand-made scores and task states, on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from thrnn.pipeline import tasks
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError
from thrnn.pipeline.params import validate_params
from thrnn.pipeline.settings import PipelineSettings

from .helpers import night_frames

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
    tasks.save_state(paths, "sessionize", {"seconds": 10.0})
    tasks.save_state(paths, "validate", {"figures": {"users": 2, "train_events": 30, "test_events": 8}})
    tasks.save_state(paths, "train", {"mlflow_run_id": "abc", "fingerprint": "f", "seconds": 20.0})
    tasks.save_state(paths, "evaluate", {"metrics": METRICS, "seconds": 3.0, "fallback_baseline": "blend",
                                         "baseline_figures": {"blend": BLEND, "markov1": {**BLEND, "mrr@20": 0.5}}})
    tasks.save_state(paths, "register", {"version": 2, "run_id": "abc", "promoted": False, "champion_before": 1,
                                         "reason": "worse than champion v1: ...", "seconds": 1.0})
    tasks.save_state(paths, "score", {"scored_with_version": 2, "users": 2, "recommendation_rows": 6,
                                      "churn_rows": 2, "seconds": 4.0, "recommendations_source": "thrnn-demo/2",
                                      "recommendation_users": 2, "serving": "champion v2 keeps serving"})


def test_publish_then_check(settings):
    params = validate_params({"dataset": "demo", "top_k": 3})
    _night_on_disk(settings)
    out = tasks.publish(settings, params, D)
    assert out["rows"] == {W.RECOMMENDATIONS: 6, W.CHURN_RISK: 2, W.MODEL_RUNS: 1}
    assert tasks.check(settings, params, D)["users"] == 2
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
