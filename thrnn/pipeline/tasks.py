"""One importable function per task of ``thrnn_nightly`` (the DAG file only wires them).

Every function takes the deployment settings, the validated params and the run date (a
``datetime.date``: the DAG file converts the logical date once, :func:`run_date_of`), reads what the
previous tasks left under ``$THRNN_HOME/runs/<dataset>/<run_date>/`` and writes its own output there.
What a task hands to the next is a frozen dataclass of :mod:`.states`, saved in ``state/`` and
returned, so each task can be re-run alone, by Airflow retries or by hand, and two run dates never
share a path. Heavy libraries (pyspark, torch, mlflow) are imported inside.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from contract import columns as C

from .params import RunParams
from .settings import PipelineSettings, RunPaths, registered_model_name
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
)

log = logging.getLogger(__name__)

HORIZON_COLUMNS = ("p_return_1d", "p_return_7d", "p_return_30d")
GATE_KEYS = ("recall@5", "recall@10", "recall@20", "mrr@5", "mrr@10", "mrr@20", "first_item_recall@20",
             "first_item_mrr@20", "mae_hours", "mae_hours_mean", "n_targets", "n_gaps")
MODEL_SOURCE = "{model_name}/{version}"  # recommendations.source of a model's list
DEFAULT_HORIZONS = (24.0, 168.0, 720.0)  # the published columns' names say 1 d / 7 d / 30 d

S = TypeVar("S", bound=TaskState)


# ----------------------------------------------------------------------------------------------- helpers
def run_date_of(context: Mapping[str, Any]) -> dt.date:
    """The run's logical date; manual runs without one use the run's ``run_after`` (never ``now()``)."""
    logical = context.get("logical_date")
    if logical is None and context.get("dag_run") is not None:
        logical = getattr(context["dag_run"], "logical_date", None) or context["dag_run"].run_after
    if logical is None:
        raise ValueError("the run has neither a logical date nor run_after; trigger it with a logical date")
    return logical.date() if isinstance(logical, dt.datetime) else logical


def _run(paths: RunPaths, body: Callable[[], S]) -> S:
    """Run a task body, record its wall time in the state and save the state."""
    start = time.perf_counter()
    state = body()
    return replace(state, seconds=round(time.perf_counter() - start, 3)).save(paths)


def _mlflow_key(key: str) -> str:
    return key.replace("@", "_at_")


def _numeric(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def input_paths(params: RunParams, environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    paths = list(params.input_paths) or [p.strip() for p in env.get("THRNN_INPUT_PATHS", "").split(",") if p.strip()]
    if not paths:
        raise ValueError("no input: set the DAG param input_paths or THRNN_INPUT_PATHS")
    return paths


def latest_night(settings: PipelineSettings, dataset: str) -> dt.date | None:
    """The newest published night of ``dataset`` in the warehouse (None before the first)."""
    from .warehouse import connect

    return connect(settings.warehouse).latest_night(dataset)


def split_fingerprint(data_dir: Path, cfg: Mapping[str, Any], run_date: dt.date) -> str:
    """Hash of the split's content, the training config and the date: equal inputs, equal model."""
    import pandas as pd

    from thrnn.io import read_split

    split = read_split(data_dir)
    h = hashlib.sha256(run_date.isoformat().encode())
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for frame in (split.train, split.test, split.items, split.users):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


@contextmanager
def _spark(settings: PipelineSettings, app_name: str) -> Iterator[Any]:
    """The active Spark session (e.g. a test fixture's, left running) or a new one, stopped after."""
    from pyspark.sql import SparkSession

    from jobs.spark import build_spark

    existing = SparkSession.getActiveSession()
    spark = existing or build_spark(app_name=app_name, master=settings.spark_master, conf=settings.spark_settings())
    try:
        yield spark
    finally:
        if existing is None:
            spark.stop()


# ----------------------------------------------------------------------------------------------- tasks
def sessionize(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> SessionizeState:
    """Spark job: raw logs -> Parquet splits in ``<run>/data`` (atomic, identical on re-runs)."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> SessionizeState:
        from jobs.sessionize import run

        with _spark(settings, f"thrnn-sessionize-{params.dataset}-{run_date}") as spark:
            stats = run(spark, params.format, input_paths(params), str(paths.data),
                        session_gap_seconds=params.session_gap_seconds, run_date=run_date,
                        max_bad_fraction=params.max_bad_fraction)
        return SessionizeState(data_dir=str(paths.data), stats=stats)

    return _run(paths, body)


def validate(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> ValidateState:
    """Contracts on the split (pandera + the rules of docs/design.md §3); fails with every broken rule
    listed."""
    from .checks import validate_split

    paths = settings.run_paths(params.dataset, run_date)
    return _run(paths, lambda: ValidateState(figures=validate_split(paths.data)))


def _training_config(settings: PipelineSettings, params: RunParams):  # noqa: ANN202 - TrainConfig
    from thrnn.config import config_for

    # preset of the input format (or the param preset), never of the dataset name; given knobs on top
    return config_for(params.train_preset, "thrnn", **params.train_overrides(), device=settings.device)


def _log_epoch(epoch: int, record: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_metrics({_mlflow_key(k): v for k, v in _numeric(record).items() if k != "epoch"}, step=int(epoch))


@contextmanager
def _training_run(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths,
                  cfg: Any, fingerprint: str) -> Iterator[Any]:
    """The night's MLflow run (one per attempt), tagged with the date, the fingerprint and the split's
    figures, with the training config and the other DAG params as params."""
    import mlflow

    from . import registry

    registry.setup_mlflow(settings.tracking_uri)
    exp = registry.ensure_experiment(registered_model_name(params.dataset), settings.artifact_root)
    stats_file = paths.data / C.STATS_FILE
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    tags = {"run_date": run_date.isoformat(), "dataset": params.dataset, "fingerprint": fingerprint,
            **{f"data.{k}": str(v) for k, v in stats.items()}}
    with mlflow.start_run(experiment_id=exp, run_name=f"{params.dataset}-{run_date}", tags=tags) as run:
        mlflow.log_params({k: ("" if v is None else v) for k, v in cfg.to_dict().items()})
        mlflow.log_params({f"dag.{k}": v for k, v in params.to_dict().items()
                           if k not in cfg.to_dict() and k != "input_paths"})
        yield run


def _fit(settings: PipelineSettings, paths: RunPaths, cfg: Any) -> dict[str, Any]:
    """Train in this process, or with ``THRNN_TRAIN_NPROC`` > 1 in torchrun data-parallel processes that
    do not talk to MLflow: their per-epoch records are logged here afterwards, at the same steps."""
    import mlflow

    if settings.train_nproc <= 1:
        from thrnn.train import train as train_model

        return train_model(paths.data, paths.train, cfg, progress=True, on_epoch=_log_epoch)
    from thrnn.launch import train_distributed

    mlflow.set_tag("train_nproc", settings.train_nproc)
    history = train_distributed(paths.data, paths.train, cfg, settings.train_nproc)
    for record in history["epochs"]:
        _log_epoch(int(record["epoch"]), record)
    return history


def train(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> TrainState:
    """Train THRNN on ``<run>/data`` into ``<run>/train``; one MLflow run per attempt, per-epoch metrics."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> TrainState:
        import mlflow

        cfg = _training_config(settings, params)
        fingerprint = split_fingerprint(paths.data, cfg.to_dict(), run_date)
        with _training_run(settings, params, run_date, paths, cfg, fingerprint) as run:
            history = _fit(settings, paths, cfg)
            for name, content in (("config.json", cfg.to_dict()), ("history.json", history),
                                  ("settings.json", settings.to_dict())):
                mlflow.log_dict(content, name)
        return TrainState(mlflow_run_id=run.info.run_id, fingerprint=fingerprint, run_dir=str(paths.train),
                          epochs=cfg.epochs, device=cfg.device, nproc=settings.train_nproc)

    return _run(paths, body)


def _run_baselines(data_dir: Path, out_dir: Path, params: RunParams, device: str) -> dict[str, dict[str, Any]]:
    """Baselines of thrnn.baselines on the same split; tolerant: a missing or failing one is logged.

    The non-neural baselines always run (cheap); GRU4Rec/HRNN only with the param ``neural_baselines``.
    """
    import inspect

    try:
        from thrnn.baselines import run_baselines
    except ImportError as err:
        log.warning("baselines skipped: thrnn.baselines.run_baselines unavailable (%s)", err)
        return {}
    from thrnn.config import config_for

    thrnn_cfg = config_for(params.train_preset, "thrnn", **params.train_overrides())  # epochs, seed as THRNN's
    wanted = {"neural_epochs": thrnn_cfg.epochs if params.neural_baselines else 0, "seed": thrnn_cfg.seed,
              "dataset": params.train_preset, "device": device, "progress": False}
    accepted = inspect.signature(run_baselines).parameters
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    try:
        results = run_baselines(data_dir, out_dir, **kwargs)
    except Exception:  # a baseline must not sink the nightly model
        log.exception("baselines failed; the report shows THRNN alone")
        return {}
    return {str(k): dict(v) for k, v in (results or {}).items()}


def _write_evaluation(paths: RunPaths, params: RunParams, run_date: dt.date,
                      results: Mapping[str, Mapping[str, Any]]) -> None:
    """report.md, metrics and plots in ``<run>/evaluation`` (training curves from history.json)."""
    from thrnn.report import plot_training_curves, write_report

    paths.evaluation.mkdir(parents=True, exist_ok=True)
    figures = json.dumps(ValidateState.load(paths).figures)
    write_report(dict(results), paths.evaluation, title=f"THRNN nightly evaluation {params.dataset} {run_date}",
                 notes=f"run_date {run_date}; split figures: {figures}")
    history_path = paths.train / "history.json"
    if history_path.exists():
        plot_training_curves(json.loads(history_path.read_text()), paths.evaluation / "training_curves.png")


def _log_evaluation(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths,
                    run_id: str, metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]
                    ) -> dict[str, Any] | None:
    """THRNN's and the baselines' metrics and the evaluation folder to the night's run, then tonight's
    model against the champion on tonight's split (``registry.head_to_head``, None without one)."""
    import mlflow

    from . import registry

    registry.setup_mlflow(settings.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({_mlflow_key(k): v for k, v in _numeric(metrics).items()})
        for name, m in baselines.items():
            mlflow.log_metrics({f"baseline.{name}.{_mlflow_key(k)}": v for k, v in _numeric(m).items()})
        mlflow.log_artifacts(str(paths.evaluation), "evaluation")
    versus = registry.head_to_head(settings, params, run_date, GATE_KEYS)
    if versus is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(versus, "evaluation/champion_head_to_head.json")
    return versus


def _evaluate_state(metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
                    versus: Mapping[str, Any] | None) -> EvaluateState:
    """The gate's inputs: THRNN's figures, every ranking baseline's, and those of the baselines a night
    can publish (GRU4Rec/HRNN are reported but serve no lists), which the gate and the fallback use."""
    from thrnn.baselines.session_aware import LISTABLE

    from . import registry

    figures = registry.baseline_figures(baselines)
    gate = sorted(n for n in figures if n in LISTABLE)
    gate_figures = {n: figures[n] for n in gate}
    return EvaluateState(
        metrics={k: metrics.get(k) for k in GATE_KEYS}, baselines=sorted(baselines),
        champion_head_to_head=None if versus is None else dict(versus), baseline_figures=figures,
        gate_baselines=gate, best_baseline=registry.best_baselines(gate_figures),
        fallback_baseline=registry.fallback_baseline(gate_figures),
        baseline_params={n: baselines[n]["params"] for n in gate if baselines[n].get("params")})


def evaluate(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> EvaluateState:
    """Evaluate THRNN and the baselines on the test split; report + plots to MLflow."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> EvaluateState:
        from thrnn.evaluate import evaluate_run

        trained = TrainState.load(paths)
        metrics = evaluate_run(paths.data, paths.train, device=settings.device)
        baselines = _run_baselines(paths.data, paths.evaluation / "baselines", params, settings.device)
        _write_evaluation(paths, params, run_date, {"thrnn": metrics, **{k: v for k, v in baselines.items()
                                                                         if k != "thrnn"}})
        versus = _log_evaluation(settings, params, run_date, paths, trained.mlflow_run_id, metrics, baselines)
        return _evaluate_state(metrics, baselines, versus)

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
        from . import registry
        from .pyfunc import log_pyfunc

        trained, evaluated = TrainState.load(paths), EvaluateState.load(paths)
        return RegisterState.from_dict(registry.register_and_gate(
            registry.setup_mlflow(settings.tracking_uri), registered_model_name(params.dataset), model_uri=None,
            run_id=trained.mlflow_run_id, metrics=evaluated.metrics, run_date=run_date,
            fingerprint=trained.fingerprint, dataset=params.dataset, recall_tolerance=params.recall_tolerance,
            mae_tolerance=params.mae_tolerance, force=params.force_promote,
            log_model=lambda: log_pyfunc(paths, trained.mlflow_run_id, settings.tracking_uri),
            head_to_head=evaluated.champion_head_to_head, baselines=evaluated.gate_figures(),
            baseline_tolerance=params.baseline_tolerance, latest_night=latest_night(settings, params.dataset)))

    return _run(paths, body)


def _published_frames(recs: Any, churn: Any, params: RunParams, run_date: dt.date, name: str, version: int,
                      baseline_recs: Any | None, source: str) -> tuple[Any, Any]:
    """The rows of ``recommendations`` and ``churn_risk`` as published: the night's keys, the source,
    the risk bucket and the expected return time; a baseline's lists replace the model's when given."""
    import pandas as pd

    from .checks import risk_bucket
    from .warehouse import SOURCE

    common = {"run_date": run_date, "dataset": params.dataset, "model_name": name, "model_version": version}
    if baseline_recs is not None:
        recs = baseline_recs.assign(**{**common, "model_version": pd.Series(pd.NA, index=baseline_recs.index,
                                                                           dtype="Int64")})
    else:
        recs = recs.assign(**common)
    recs[SOURCE] = source
    churn = churn.assign(**common)
    churn["risk_bucket"] = risk_bucket(churn["churn_risk"], params.risk_thresholds)
    churn["expected_return_at"] = pd.to_datetime(churn["last_session_end"], utc=True) + pd.to_timedelta(
        churn["expected_return_hours"], unit="h")
    return recs, churn


def _write_scores(paths: RunPaths, recs: Any, churn: Any) -> None:
    from .warehouse import CHURN_COLUMNS, RECOMMENDATION_COLUMNS

    paths.scores.mkdir(parents=True, exist_ok=True)
    for frame, cols, fname in ((recs, RECOMMENDATION_COLUMNS, "recommendations.parquet"),
                               (churn, CHURN_COLUMNS, "churn_risk.parquet")):
        tmp = paths.scores / f".{fname}.tmp"
        frame[cols].to_parquet(tmp, index=False)
        os.replace(tmp, paths.scores / fname)


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
        name, serving = registered_model_name(params.dataset), RegisterState.load(paths).served()
        version, baseline = int(serving["version"]), serving.get("baseline")
        wrapper, split, recs, churn = _model_scores(settings, params, run_date, paths, name, version)
        source = baseline or MODEL_SOURCE.format(model_name=name, version=version)
        recs, churn = _published_frames(recs, churn, params, run_date, name, version,
                                        _baseline_lists(paths, split, baseline, params.top_k), source)
        _write_scores(paths, recs, churn)
        return ScoreState(scored_with_version=version, users=int(churn["user_key"].nunique()),
                          recommendation_users=int(recs["user_key"].nunique()), recommendations_source=source,
                          serving=serving.get("reason", ""), recommendation_rows=len(recs), churn_rows=len(churn),
                          **wrapper.last_unknown)

    return _run(paths, body)


def _model_scores(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths, name: str,
                  version: int) -> tuple[Any, Any, Any, Any]:
    """(pyfunc wrapper, split, recommendations, churn) of registered ``version`` on tonight's split, the
    churn horizons renamed to the table's three fixed columns (the params choose what they measure)."""
    import mlflow

    from thrnn.io import read_split
    from thrnn.scoring import horizon_column

    from . import registry
    from .pyfunc import history_from_split

    registry.setup_mlflow(settings.tracking_uri)
    wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    split = read_split(paths.data)
    recs, churn = wrapper.score(history_from_split(split), run_date=run_date, top_k=params.top_k,
                                horizons_hours=params.horizons_hours)
    churn = churn.rename(columns={horizon_column(h): col for h, col in
                                  zip(params.horizons_hours, HORIZON_COLUMNS, strict=True)})
    return wrapper, split, recs, churn


def _baseline_lists(paths: RunPaths, split: Any, baseline: str | None, top_k: int) -> Any | None:
    """The next-session lists of ``baseline`` (with its tuned params of tonight) for every user, or None."""
    if not baseline:
        return None
    from thrnn.baselines.session_aware import baseline_recommendations

    return baseline_recommendations(split, baseline, top_k, EvaluateState.load(paths).baseline_params.get(baseline))


def model_run_row(paths: RunPaths, params: RunParams, run_date: dt.date) -> dict[str, Any]:
    """The ``model_runs`` row of the night, from the tasks' states."""
    from .warehouse import BASELINE_FIGURE_COLUMNS, BEST_BASELINE, RECOMMENDATIONS_SOURCE

    # the split may come from elsewhere (sessionize marked successful by an operator): its time is then unknown
    ses = SessionizeState.load(paths) if SessionizeState.exists(paths) else SessionizeState()
    val, trn = ValidateState.load(paths), TrainState.load(paths)
    ev, reg, sc = EvaluateState.load(paths), RegisterState.load(paths), ScoreState.load(paths)
    row: dict[str, Any] = {
        "run_date": run_date, "dataset": params.dataset, "model_name": registered_model_name(params.dataset),
        "model_version": reg.version, "mlflow_run_id": reg.run_id,
    }
    for key in GATE_KEYS:
        row[_mlflow_key(key).replace(".", "_")] = ev.metrics.get(key)
    row.update(
        champion_version_before=reg.champion_before, promoted=bool(reg.promoted), decision=reg.reason,
        scored_with_version=sc.scored_with_version, users=val.figures["users"],
        train_events=val.figures["train_events"], test_events=val.figures["test_events"],
        recommendation_rows=sc.recommendation_rows, churn_rows=sc.churn_rows,
        sessionize_seconds=ses.seconds, train_seconds=trn.seconds, evaluate_seconds=ev.seconds,
        score_seconds=sc.seconds,
    )
    # what the night serves, and the baseline a baseline night would serve (best on first-item R@20)
    model_source = MODEL_SOURCE.format(model_name=row["model_name"], version=sc.scored_with_version)
    row[RECOMMENDATIONS_SOURCE] = sc.recommendations_source or model_source
    row["serving"] = sc.serving or (reg.serving or {}).get("reason")
    best = ev.fallback_baseline
    row[BEST_BASELINE] = best
    figures = ev.baseline_figures.get(best, {}) if best else {}
    for key, column in BASELINE_FIGURE_COLUMNS.items():
        row[column] = figures.get(key)
    return row


def _check_night(paths: RunPaths, params: RunParams, run_date: dt.date) -> Callable[[Any], CheckState]:
    """The published-night contract of this night, as a function of a warehouse reader."""
    from .checks import check_published

    scored = ScoreState.load(paths)

    def verify(wh: Any) -> CheckState:
        return CheckState(**check_published(
            wh, params.dataset, run_date, expected_users=scored.users, top_k=params.top_k,
            risk_thresholds=params.risk_thresholds, horizons_hours=params.horizons_hours,
            expected_recommendation_users=scored.recommendation_users,
            expected_source=scored.recommendations_source))

    return verify


def publish(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> PublishState:
    """Replace the night in the warehouse (recommendations, churn_risk, model_runs) in one transaction.

    The night's contract (:func:`check`'s) runs inside the transaction before the commit: a night
    that breaks it is never visible and the previous rows stay.
    """
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> PublishState:
        import pandas as pd

        from . import warehouse as W

        frames = {
            W.RECOMMENDATIONS: pd.read_parquet(paths.scores / "recommendations.parquet"),
            W.CHURN_RISK: pd.read_parquet(paths.scores / "churn_risk.parquet"),
            W.MODEL_RUNS: pd.DataFrame([model_run_row(paths, params, run_date)], columns=W.MODEL_RUN_COLUMNS),
        }
        counts = W.connect(settings.warehouse).publish(params.dataset, run_date, frames,
                                                       verify=_check_night(paths, params, run_date))
        return PublishState(warehouse=settings.to_dict()["warehouse_url"], rows=counts)

    return _run(paths, body)


def check(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> CheckState:
    """Re-read the published night and check counts, ranges, one row set per user and its source."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> CheckState:
        from . import warehouse as W

        return _check_night(paths, params, run_date)(W.connect(settings.warehouse))

    return _run(paths, body)


def promote(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> PromoteState:
    """The night's last task: move ``champion`` to the night's candidate once the night is published and
    checked. No candidate, a backfill (a later night is published) or a champion that moved since the
    gate: the alias stays (``registry.promote_candidate``)."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> PromoteState:
        from . import registry

        published, checked = PublishState.path(paths), CheckState.path(paths)
        if not published.exists() or not checked.exists() or checked.stat().st_mtime < published.stat().st_mtime:
            raise RuntimeError(f"{paths.root}: publish and then check must succeed before promote")
        reg = RegisterState.load(paths)
        if reg.candidate is None:
            return PromoteState(moved=False, candidate=None, reason="no candidate: the gate kept the champion")
        out = registry.promote_candidate(
            registry.setup_mlflow(settings.tracking_uri), registered_model_name(params.dataset),
            version=int(reg.candidate), run_date=run_date, champion_before=reg.champion_before,
            latest_night=latest_night(settings, params.dataset))
        log.info("promote %s: %s", run_date, out["reason"])
        return PromoteState(candidate=int(reg.candidate), **out)

    return _run(paths, body)


def _backtest_skip(settings: PipelineSettings, params: RunParams, past: dt.date) -> tuple[str, Any]:
    """(why the backtest is skipped or "", the churn_risk rows published for ``past``)."""
    if not params.backtest_days:
        return "param backtest_days is 0 (off)", None
    if tuple(params.horizons_hours) != DEFAULT_HORIZONS:
        return (f"horizons {list(params.horizons_hours)} are not the columns' 1 d / 7 d / 30 d; the backtest "
                "reads them as such"), None
    from . import warehouse as W

    rows = W.connect(settings.warehouse).read_night("churn_risk", params.dataset, past)
    return (f"no churn_risk rows were published for {params.dataset} {past}" if rows.empty else ""), rows


def _backtest_figures(result: Mapping[str, Any], past: dt.date) -> dict[str, Any]:
    model = result["model"]
    return {"published_date": past.isoformat(), "users": result["users_scored"],
            "auc_no_return_30d": model["auc_no_return_30d"], "mae_hours": model["mae_hours"],
            **{f"{k}_{lab}": h[k] for lab, h in model["horizons"].items()
               for k in ("brier", "ece", "base_rate", "mean_p")}}


def _log_backtest(settings: PipelineSettings, run_id: str | None, figures: Mapping[str, Any], out: Path) -> None:
    import mlflow

    from . import registry

    if not run_id:
        return
    registry.setup_mlflow(settings.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"backtest.{k}": float(v) for k, v in figures.items()
                            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)})
        mlflow.log_artifacts(str(out), "backtest")


def backtest(settings: PipelineSettings, params: RunParams, run_date: dt.date) -> BacktestState:
    """Off unless the param ``backtest_days`` N is > 0: the ``churn_risk`` rows published for night
    D - N against tonight's sessionized data, which holds every event up to the end of D
    (:func:`thrnn.backtest.backtest_published`). ``backtest.json``, ``backtest.md`` and
    ``reliability.png`` go to the night's ``backtest/`` folder and its MLflow run; docs/backtest.md
    says how to read them. Skipped, with the reason, when there is no such night."""
    paths = settings.run_paths(params.dataset, run_date)

    def body() -> BacktestState:
        from thrnn.backtest import backtest_published, write_outputs
        from thrnn.io import read_split
        from thrnn.scoring import run_date_end

        past = run_date - dt.timedelta(days=params.backtest_days)
        reason, rows = _backtest_skip(settings, params, past)
        if reason:
            return BacktestState(skipped=True, reason=reason)
        result = backtest_published(rows, read_split(paths.data), past, run_date_end(run_date),
                                    risk_thresholds=tuple(params.risk_thresholds))
        result.update(name=f"{params.dataset} as published", run_dir=f"churn_risk rows of {past}",
                      baselines=result.get("baselines") or {})
        write_outputs(result, paths.root / "backtest")
        figures = _backtest_figures(result, past)
        _log_backtest(settings, TrainState.load(paths).mlflow_run_id, figures, paths.root / "backtest")
        log.info("backtest of the night %s: %s", past, figures)
        return BacktestState(figures=figures)

    return _run(paths, body)
