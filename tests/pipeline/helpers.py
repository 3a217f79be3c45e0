"""Hand-made nightly frames for the publishing tests."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from thrnn.pipeline import warehouse as W


def night_frames(
    run_date: dt.date, dataset: str = "demo", version: int = 1, users: tuple[str, ...] = ("u1", "u2"), k: int = 3
) -> dict[str, pd.DataFrame]:
    """A consistent small night: k recommendations and one churn row per user, and its model_runs row."""
    rec = pd.DataFrame(
        [
            {
                "run_date": run_date, "dataset": dataset, "user_key": u, "rank": r, "item_key": f"i{(j + r) % 5}",
                "item_name": f"Item {(j + r) % 5}", "score": float(10 - r) + version / 10, "model_name": f"thrnn-{dataset}",
                "model_version": version, "source": f"thrnn-{dataset}/{version}",
            }
            for j, u in enumerate(users)
            for r in range(1, k + 1)
        ]
    )
    end = pd.Timestamp(run_date, tz="UTC") - pd.Timedelta(hours=5)
    p = [(0.1, 0.2, 0.5), (0.6, 0.8, 0.95)]
    churn = pd.DataFrame(
        [
            {
                "run_date": run_date, "dataset": dataset, "user_key": u, "last_session_end": end,
                "elapsed_hours": 5.0, "expected_return_hours": 30.0 + j, "median_return_hours": 20.0 + j,
                "expected_return_at": end + pd.Timedelta(hours=30 + j), "p_no_return": 0.0,
                "p_return_1d": p[j % 2][0], "p_return_7d": p[j % 2][1], "p_return_30d": p[j % 2][2],
                "churn_risk": 1 - p[j % 2][2], "risk_bucket": "medium" if j % 2 == 0 else "low",
                "model_name": f"thrnn-{dataset}", "model_version": version,
            }
            for j, u in enumerate(users)
        ]
    )
    run = {c: None for c in W.MODEL_RUN_COLUMNS}
    run.update(
        run_date=run_date, dataset=dataset, model_name=f"thrnn-{dataset}", model_version=version,
        mlflow_run_id=f"run{version}", recall_at_20=0.25, mae_hours=40.0, promoted=True, decision="first model",
        scored_with_version=version, users=len(users), recommendation_rows=len(rec), churn_rows=len(churn),
        train_seconds=1.5, recommendations_source=f"thrnn-{dataset}/{version}",
    )
    return {W.RECOMMENDATIONS: rec, W.CHURN_RISK: churn, W.MODEL_RUNS: pd.DataFrame([run])}
