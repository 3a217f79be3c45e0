"""The evaluate task's parts: THRNN's figures on the night's test split, the baselines beside it, the
report, what goes to the night's MLflow run, the comparison with the champion and the gate's inputs.
Heavy libraries (torch, mlflow) are imported inside."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import registry
from .params import RunParams
from .settings import PipelineSettings, RunPaths
from .states import EvaluateState, ValidateState

log = logging.getLogger(__name__)

GATE_KEYS = ("recall@5", "recall@10", "recall@20", "mrr@5", "mrr@10", "mrr@20", "first_item_recall@20",
             "first_item_mrr@20", "mae_hours", "mae_hours_mean", "n_targets", "n_gaps")


def thrnn_metrics(settings: PipelineSettings, paths: RunPaths) -> dict[str, Any]:
    """The night's model (``<run>/train``) on the test split of ``<run>/data``."""
    from thrnn.evaluate import evaluate_run

    return evaluate_run(paths.data, paths.train, device=settings.device)


def run_baselines(data_dir: Path, out_dir: Path, params: RunParams, device: str) -> dict[str, dict[str, Any]]:
    """Baselines of thrnn.baselines on the same split; tolerant: a missing or failing one is logged.

    The non-neural baselines always run (cheap); GRU4Rec/HRNN only with the param ``neural_baselines``.
    """
    try:
        from thrnn.baselines import run_baselines as run_all
    except ImportError as err:
        log.warning("baselines skipped: thrnn.baselines.run_baselines unavailable (%s)", err)
        return {}
    from thrnn.config import config_for

    thrnn_cfg = config_for(params.train_preset, "thrnn", **params.train_overrides())  # epochs, seed as THRNN's
    wanted = {"neural_epochs": thrnn_cfg.epochs if params.neural_baselines else 0, "seed": thrnn_cfg.seed,
              "dataset": params.train_preset, "device": device, "progress": False}
    accepted = inspect.signature(run_all).parameters
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    try:
        results = run_all(data_dir, out_dir, **kwargs)
    except Exception:  # a baseline must not sink the nightly model
        log.exception("baselines failed; the report shows THRNN alone")
        return {}
    return {str(k): dict(v) for k, v in (results or {}).items()}


def write_evaluation(paths: RunPaths, params: RunParams, run_date: dt.date, metrics: Mapping[str, Any],
                 baselines: Mapping[str, Mapping[str, Any]]) -> None:
    """report.md, metrics and plots in ``<run>/evaluation`` (training curves from history.json)."""
    from thrnn.report import plot_training_curves, write_report

    results = {"thrnn": metrics, **{k: v for k, v in baselines.items() if k != "thrnn"}}
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    figures = json.dumps(ValidateState.load(paths).figures)
    write_report(dict(results), paths.evaluation, title=f"THRNN nightly evaluation {params.dataset} {run_date}",
                 notes=f"run_date {run_date}; split figures: {figures}")
    history_path = paths.train / "history.json"
    if history_path.exists():
        plot_training_curves(json.loads(history_path.read_text()), paths.evaluation / "training_curves.png")


def log_to_run(settings: PipelineSettings, paths: RunPaths, run_id: str, metrics: Mapping[str, Any],
               baselines: Mapping[str, Mapping[str, Any]]) -> None:
    """THRNN's and the baselines' metrics and the evaluation folder to the night's run."""
    import mlflow

    registry.setup_mlflow(settings.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(registry.mlflow_metrics(metrics))
        for name, m in baselines.items():
            mlflow.log_metrics({f"baseline.{name}.{k}": v for k, v in registry.mlflow_metrics(m).items()})
        mlflow.log_artifacts(str(paths.evaluation), "evaluation")


def versus_champion(settings: PipelineSettings, params: RunParams, run_date: dt.date,
                    run_id: str) -> dict[str, Any] | None:
    """Tonight's model against the champion on tonight's split (:func:`registry.head_to_head`, None
    without one), logged to the night's run."""
    import mlflow

    versus = registry.head_to_head(settings, params, run_date, GATE_KEYS)
    if versus is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(versus, "evaluation/champion_head_to_head.json")
    return versus


def evaluate_state(metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
                   versus: Mapping[str, Any] | None) -> EvaluateState:
    """The gate's inputs: THRNN's figures, every ranking baseline's, and those of the baselines a night
    can publish (GRU4Rec/HRNN are reported but serve no lists), which the gate and the fallback use."""
    from thrnn.baselines.session_aware import LISTABLE

    figures = registry.baseline_figures(baselines)
    gate = sorted(n for n in figures if n in LISTABLE)
    gate_figures = {n: figures[n] for n in gate}
    return EvaluateState(
        metrics={k: metrics.get(k) for k in GATE_KEYS}, baselines=sorted(baselines),
        champion_head_to_head=None if versus is None else dict(versus), baseline_figures=figures,
        gate_baselines=gate, best_baseline=registry.best_baselines(gate_figures),
        fallback_baseline=registry.fallback_baseline(gate_figures),
        baseline_params={n: baselines[n]["params"] for n in gate if baselines[n].get("params")})
