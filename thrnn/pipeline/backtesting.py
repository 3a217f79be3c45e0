"""The backtest task's parts: whether there is a published night to check, the check of its
``churn_risk`` rows against the sessions since (:func:`thrnn.backtest.backtest_published`), its
figures and what goes to the night's MLflow run. Heavy libraries are imported inside."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import registry
from .params import RunParams
from .settings import PipelineSettings, RunPaths

log = logging.getLogger(__name__)

DEFAULT_HORIZONS = (24.0, 168.0, 720.0)  # the published columns' names say 1 d / 7 d / 30 d


def skip_reason(settings: PipelineSettings, params: RunParams, past: dt.date) -> tuple[str, Any]:
    """(why the backtest is skipped or "", the churn_risk rows published for ``past``)."""
    if not params.backtest_days:
        return "param backtest_days is 0 (off)", None
    if tuple(params.horizons_hours) != DEFAULT_HORIZONS:
        return (f"horizons {list(params.horizons_hours)} are not the columns' 1 d / 7 d / 30 d; the backtest "
                "reads them as such"), None
    from . import warehouse as W

    rows = W.connect(settings.warehouse).read_night("churn_risk", params.dataset, past)
    return (f"no churn_risk rows were published for {params.dataset} {past}" if rows.empty else ""), rows


def backtest_night(paths: RunPaths, params: RunParams, run_date: dt.date, past: dt.date, rows: Any) -> dict[str, Any]:
    """The rows published for ``past`` against tonight's split (every event up to the end of
    ``run_date``); writes ``<run>/backtest/`` and returns the figures."""
    from thrnn.backtest import backtest_published, write_outputs
    from thrnn.io import read_split
    from thrnn.scoring import run_date_end

    result = backtest_published(rows, read_split(paths.data), past, run_date_end(run_date),
                                risk_thresholds=tuple(params.risk_thresholds))
    result.update(name=f"{params.dataset} as published", run_dir=f"churn_risk rows of {past}",
                  baselines=result.get("baselines") or {})
    write_outputs(result, paths.root / "backtest")
    figures = _figures(result, past)
    log.info("backtest of the night %s: %s", past, figures)
    return figures


def _figures(result: Mapping[str, Any], past: dt.date) -> dict[str, Any]:
    model = result["model"]
    return {"published_date": past.isoformat(), "users": result["users_scored"],
            "auc_no_return_30d": model["auc_no_return_30d"], "mae_hours": model["mae_hours"],
            **{f"{k}_{lab}": h[k] for lab, h in model["horizons"].items()
               for k in ("brier", "ece", "base_rate", "mean_p")}}


def log_to_run(settings: PipelineSettings, run_id: str | None, figures: Mapping[str, Any], out: Path) -> None:
    """The figures (``backtest.<name>``) and the ``backtest/`` folder to the night's run, when it has one."""
    import mlflow

    if not run_id:
        return
    registry.setup_mlflow(settings.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"backtest.{k}": v for k, v in registry.mlflow_metrics(figures).items()})
        mlflow.log_artifacts(str(out), "backtest")
