"""One importable function per task of ``thrnn_nightly`` (the DAG file only wires them).

Every function takes the deployment settings, the validated params and the run date (a
``datetime.date``: the DAG file converts the logical date once, :func:`run_date_of`), reads what the
previous tasks left under ``$THRNN_HOME/runs/<dataset>/<run_date>/`` and writes its own output there.
What a task hands to the next is a frozen dataclass of :mod:`.states`, saved in ``state/`` and
returned, so each task can be re-run alone, by Airflow retries or by hand, and two run dates never
share a path. Each body is the task's recipe; the steps live in the modules that own them
(:mod:`.sessionizing`, :mod:`.training`, :mod:`.evaluation`, :mod:`.registry`, :mod:`.publishing`,
:mod:`.backtesting`), which import the heavy libraries (pyspark, torch, mlflow) inside.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from . import backtesting, evaluation, publishing, registry, sessionizing, training
from .params import RunParams
from .settings import PipelineSettings, RunPaths, parse_run_date
from .states import (
    BacktestState,
    CheckState,
    EvaluateState,
    PromoteState,
    PublishState,
    RegisterState,
    ScoreState,
    SessionizeState,
    TaskState,
    TrainState,
    ValidateState,
    require_checked,
)

log = logging.getLogger(__name__)

S = TypeVar("S", bound=TaskState)


# ----------------------------------------------------------------------------------------------- helpers
def run_date_of(context: Mapping[str, Any]) -> dt.date:
    """The run's logical date; manual runs without one use the run's ``run_after`` (never ``now()``).
    A logical date given as text must be ``YYYY-MM-DD`` (:func:`.settings.parse_run_date`)."""
    logical = context.get("logical_date")
    if logical is None and context.get("dag_run") is not None:
        logical = getattr(context["dag_run"], "logical_date", None) or context["dag_run"].run_after
    if logical is None:
        raise ValueError("the run has neither a logical date nor run_after; trigger it with a logical date")
    if isinstance(logical, str):
        return parse_run_date(logical)
    return logical.date() if isinstance(logical, dt.datetime) else logical


def _run(paths: RunPaths, body: Callable[[], S]) -> S:
    """Run a task body, record its wall time in the state and save the state."""
    start = time.perf_counter()
    state = body()
    return replace(state, seconds=round(time.perf_counter() - start, 3)).save(paths)


def latest_night(settings: PipelineSettings, dataset: str) -> dt.date | None:
    """The newest published night of ``dataset`` in the warehouse (None before the first)."""
    from .warehouse import connect

    return connect(settings.warehouse).latest_night(dataset)


# ----------------------------------------------------------------------------------------------- tasks
def sessionize(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> SessionizeState:
    """Spark job: raw logs -> Parquet splits in ``<run>/data`` (atomic, identical on re-runs)."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> SessionizeState:
        inputs = sessionizing.input_paths(params)
        with sessionizing.spark_session(settings, f"thrnn-sessionize-{params.dataset}-{run_date}", inputs) as spark:
            stats = sessionizing.sessionize_job(spark, params, inputs, paths, run_date)
        return SessionizeState(data_dir=str(paths.data), stats=stats)

    return _run(paths, body)


def validate(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> ValidateState:
    """Contracts on the split (pandera + the rules of docs/design.md §3); fails with every broken rule
    listed."""
    from .checks import validate_split

    paths = settings.run_paths(params.dataset, run_date)
    return _run(paths, lambda: ValidateState(figures=validate_split(paths.data)))


def train(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> TrainState:
    """Train THRNN on ``<run>/data`` into ``<run>/train``; one MLflow run per attempt, per-epoch metrics."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> TrainState:
        cfg = training.training_config(settings, params)
        fingerprint = training.split_fingerprint(paths.data, cfg.to_dict(), run_date)
        with training.training_run(settings, params, run_date, paths, cfg, fingerprint) as run:
            training.log_run_files(settings, cfg, training.fit(settings, paths, cfg))
        return TrainState(mlflow_run_id=run.info.run_id, fingerprint=fingerprint, run_dir=str(paths.train),
                          epochs=cfg.epochs, device=cfg.device, nproc=settings.train_nproc)

    return _run(paths, body)


def evaluate(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> EvaluateState:
    """Evaluate THRNN and the baselines on the test split; report + plots to MLflow, then tonight's model
    against the champion on tonight's split."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> EvaluateState:
        run_id = TrainState.load(paths).mlflow_run_id
        metrics = evaluation.thrnn_metrics(settings, paths)
        baselines = evaluation.run_baselines(paths.data, paths.evaluation / "baselines", params, settings.device)
        evaluation.write_evaluation(paths, params, run_date, metrics, baselines)
        evaluation.log_to_run(settings, paths, run_id, metrics, baselines)
        versus = evaluation.versus_champion(settings, params, run_date, run_id)
        return evaluation.evaluate_state(metrics, baselines, versus)

    return _run(paths, body)


def register(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> RegisterState:
    """Register tonight's model, apply the gate and choose what the night serves; the alias stays.

    The gate: at least as good as the best listable baseline of tonight's split (next-item and
    first-item Recall@20 and MRR@20, param ``baseline_tolerance``) and not worse than the champion.
    A model that passes is the night's ``candidate``; :func:`promote` makes it champion after the
    night is published and checked. A night older than the newest published one is a backfill: never
    a candidate, served by its own model. ``serving`` (``registry.choose_serving``) says which version
    scores and whether recommendations come from a baseline instead. Re-runs reuse the version and
    repeat the recorded choices.
    """
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> RegisterState:
        trained, evaluated = TrainState.load(paths), EvaluateState.load(paths)
        latest = latest_night(settings, params.dataset)
        return RegisterState.from_dict(registry.gate_night(settings, params, run_date, trained, evaluated, latest))

    return _run(paths, body)


def score(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> ScoreState:
    """Score every user of tonight's split; writes ``<run>/scores/*.parquet``.

    The model is the version register chose for this night (``serving.version``, see
    :meth:`RegisterState.served`), loaded by version number so a re-run scores with the same one
    whatever the alias says now. churn_risk always comes from it; recommendations too, unless register
    chose a baseline (``serving.baseline``): then they are that baseline's next-session lists for every
    user of the split, ``model_version`` NULL.
    """
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> ScoreState:
        serving = RegisterState.load(paths).served()
        recs, churn, source, unknown = publishing.night_scores(settings, params, run_date, paths, serving)
        publishing.write_scores(paths, recs, churn)
        return ScoreState(scored_with_version=int(serving["version"]), users=int(churn["user_key"].nunique()),
                          recommendation_users=int(recs["user_key"].nunique()), recommendations_source=source,
                          serving=serving.get("reason", ""), recommendation_rows=len(recs), churn_rows=len(churn),
                          **unknown)

    return _run(paths, body)


def publish(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> PublishState:
    """Replace the night in the warehouse (recommendations, churn_risk, model_runs) in one transaction.

    The night's contract (:func:`check`'s) runs inside the transaction before the commit: a night
    that breaks it is never visible and the previous rows stay.
    """
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> PublishState:
        from .warehouse import connect

        frames = publishing.night_frames(paths, params, run_date)
        counts = connect(settings.warehouse).publish(params.dataset, run_date, frames,
                                                     verify=publishing.night_check(paths, params, run_date))
        return PublishState(warehouse=settings.to_dict()["warehouse_url"], rows=counts)

    return _run(paths, body)


def check(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> CheckState:
    """Re-read the published night and check counts, ranges, one row set per user and its source."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> CheckState:
        from .warehouse import connect

        return publishing.night_check(paths, params, run_date)(connect(settings.warehouse))

    return _run(paths, body)


def promote(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> PromoteState:
    """The night's last task: move ``champion`` to the night's candidate once the night is published and
    checked. No candidate, a backfill (a later night is published) or a champion that moved since the
    gate: the alias stays (``registry.promote_candidate``)."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> PromoteState:
        require_checked(paths)
        reg = RegisterState.load(paths)
        if reg.candidate is None:
            return PromoteState(moved=False, candidate=None, reason="no candidate: the gate kept the champion")
        out = registry.promote_night(settings, params, run_date, reg, latest_night(settings, params.dataset))
        log.info("promote %s: %s", run_date, out["reason"])
        return PromoteState(candidate=int(reg.candidate), **out)

    return _run(paths, body)


def backtest(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> BacktestState:
    """Off unless the param ``backtest_days`` N is > 0: the ``churn_risk`` rows published for night
    D - N against tonight's sessionized data, which holds every event up to the end of D
    (:func:`thrnn.backtest.backtest_published`). ``backtest.json``, ``backtest.md`` and
    ``reliability.png`` go to the night's ``backtest/`` folder and its MLflow run; docs/backtest.md
    says how to read them. Skipped, with the reason, when there is no such night."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> BacktestState:
        past = run_date - dt.timedelta(days=params.backtest_days)
        reason, rows = backtesting.skip_reason(settings, params, past)
        if reason:
            return BacktestState(skipped=True, reason=reason)
        figures = backtesting.backtest_night(paths, params, run_date, past, rows)
        backtesting.log_to_run(settings, TrainState.load(paths).mlflow_run_id, figures, paths.root / "backtest")
        return BacktestState(figures=figures)

    return _run(paths, body)
