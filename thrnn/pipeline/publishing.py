"""What the score, publish and check tasks put in the warehouse: the night's scores with their keys,
source, risk bucket and expected return time, the ``model_runs`` row from the tasks' states, and the
published-night contract. Heavy libraries (pandas, mlflow, torch) are imported inside."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from thrnn.files import atomic_write

from . import registry
from .params import RunParams
from .settings import PipelineSettings, RunPaths, registered_model_name
from .states import (
    CheckState,
    EvaluateState,
    RegisterState,
    ScoreState,
    SessionizeState,
    TrainState,
    ValidateState,
)

HORIZON_COLUMNS = ("p_return_1d", "p_return_7d", "p_return_30d")
MODEL_SOURCE = "{model_name}/{version}"  # recommendations.source of a model's list
SCORE_FILES = {"recommendations": "recommendations.parquet", "churn_risk": "churn_risk.parquet"}


def night_scores(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths,
                 serving: Mapping[str, Any]) -> tuple[Any, Any, str, dict[str, int]]:
    """(recommendations, churn_risk, the lists' source, the users and item events the model did not
    know) as published, scored with ``serving["version"]``; the lists of ``serving["baseline"]`` when
    it names one (``model_version`` NULL)."""
    name, version, baseline = registered_model_name(params.dataset), int(serving["version"]), serving.get("baseline")
    wrapper, split, recs, churn = _model_scores(settings, params, run_date, paths, name, version)
    source = baseline or MODEL_SOURCE.format(model_name=name, version=version)
    recs, churn = _published_frames(recs, churn, params, run_date, name, version,
                                    _baseline_lists(paths, split, baseline, params.top_k), source)
    return recs, churn, source, dict(wrapper.last_unknown)


def _model_scores(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths, name: str,
                  version: int) -> tuple[Any, Any, Any, Any]:
    """(pyfunc wrapper, split, recommendations, churn) of registered ``version`` on tonight's split, the
    churn horizons renamed to the table's three fixed columns (the params choose what they measure)."""
    import mlflow

    from thrnn.io import read_split
    from thrnn.scoring import horizon_column

    from .pyfunc import history_from_split

    registry.setup_mlflow(settings.tracking_uri)
    # by version number, not by alias: a re-run scores with the same model
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


def write_scores(paths: RunPaths, recs: Any, churn: Any) -> None:
    """``<run>/scores/*.parquet`` with the tables' columns, each file replaced atomically."""
    from .warehouse import CHURN_COLUMNS, RECOMMENDATION_COLUMNS

    paths.scores.mkdir(parents=True, exist_ok=True)
    for frame, cols, fname in ((recs, RECOMMENDATION_COLUMNS, SCORE_FILES["recommendations"]),
                               (churn, CHURN_COLUMNS, SCORE_FILES["churn_risk"])):
        atomic_write(paths.scores / fname, lambda f, frame=frame, cols=cols: frame[cols].to_parquet(f, index=False))


def night_frames(paths: RunPaths, params: RunParams, run_date: dt.date) -> dict[str, Any]:
    """The three tables' rows of the night: the scores as written and the ``model_runs`` row."""
    import pandas as pd

    from . import warehouse as W

    return {
        W.RECOMMENDATIONS: pd.read_parquet(paths.scores / SCORE_FILES["recommendations"]),
        W.CHURN_RISK: pd.read_parquet(paths.scores / SCORE_FILES["churn_risk"]),
        W.MODEL_RUNS: pd.DataFrame([model_run_row(paths, params, run_date)], columns=W.MODEL_RUN_COLUMNS),
    }


def model_run_row(paths: RunPaths, params: RunParams, run_date: dt.date) -> dict[str, Any]:
    """The ``model_runs`` row of the night, from the tasks' states."""
    from .evaluation import GATE_KEYS
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
        row[registry.mlflow_key(key).replace(".", "_")] = ev.metrics.get(key)
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


def night_check(paths: RunPaths, params: RunParams, run_date: dt.date) -> Callable[[Any], CheckState]:
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
