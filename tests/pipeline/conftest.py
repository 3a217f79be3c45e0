"""Fixtures and builders of the pipeline tests: a throwaway PostgreSQL server, hand-made published nights and
the sessions of the baseline-gate nights."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), None)
    return str(found) if found else None


PG_CTL = _pg_ctl()

if PG_CTL:
    from pytest_postgresql import factories

    os.environ.setdefault("THRNN_REAL_PG_CTL", PG_CTL)
    postgresql_proc = factories.postgresql_proc(executable=str(HERE / "pg_ctl_wrapper.sh"), port=None)
    postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def pg_url(request) -> str:
    """URL of a fresh database on a throwaway PostgreSQL server (skips when pg_ctl is absent)."""
    if not PG_CTL:
        pytest.skip("PostgreSQL server binaries (pg_ctl) not installed; .ci/run installs them")
    conn = request.getfixturevalue("postgresql")
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


# ----------------------------------------------------------------------------------------------- builders
def night_frames(
    run_date: dt.date, dataset: str = "demo", version: int = 1, users: tuple[str, ...] = ("u1", "u2"), k: int = 3
) -> dict[str, Any]:
    """A consistent small night: k recommendations and one churn row per user, and its model_runs row."""
    import pandas as pd

    from thrnn.pipeline import warehouse as W

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


GATE_DATASET = "gate"
# a deliberately weak model (no personal-history mixture, one epoch, tiny embeddings)
GATE_CONF = {"dataset": GATE_DATASET, "format": "lastfm", "epochs": 1, "item_embedding": 8, "user_embedding": 4,
             "gap_embedding": 3, "batch_size": 16, "mixture": False, "top_k": 5, "seed": 1}
GATE_T0, H = 1_700_000_000.0, 3600.0


def gate_sessions(users: int = 40, sessions: int = 8, pool: int = 12, seed: int = 0) -> dict:
    """Every session of user u starts with the user's own item u + 1, then 1-4 items of a shared pool.

    The user's history predicts the first item (the personal baselines reach first-item Recall@20 of
    1), global transitions out of a pool item hardly do, and a one-epoch model neither.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        t = GATE_T0 + u * 997.0
        user = []
        for _ in range(sessions):
            seq = [u + 1]
            for _ in range(int(rng.integers(1, 5))):
                seq.append(int(rng.choice([i for i in range(users + 1, users + pool + 1) if i != seq[-1]])))
            user.append([(i, t + 90.0 * j) for j, i in enumerate(seq)])
            t += float(round(rng.uniform(8, 60) * H))
        out[u] = user
    used = sorted({i for user in out.values() for sess in user for i, _ in sess})
    dense = {item: k + 1 for k, item in enumerate(used)}  # item ids must be exactly 1..N
    return {u: [[(dense[i], ts) for i, ts in sess] for sess in user] for u, user in out.items()}
