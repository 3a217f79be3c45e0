"""``python -m thrnn backtest``: check the published churn figures against what really happened.

For a raw log and a past run date D::

    python -m thrnn backtest --input raw.tsv.gz --format lastfm --run-date 2024-10-01 --out var/backtest

1. The log is sessionized twice by the Spark job: in full (no run date) and as of D (events up to the
   end of D's UTC day, what the nightly saw that night). A THRNN model is trained on the as-of-D split
   as the nightly trains (``--preset``, ``--epochs``, ``--seed``), or ``--run`` reuses a run folder
   trained on that split; every user is scored at D with :func:`thrnn.scoring.score_users` and
   ``churn_risk`` is bucketed with the nightly's :func:`thrnn.pipeline.checks.risk_bucket`.
2. Outcomes come from the full split, users joined on their original key (the ids of the two runs
   differ). A user's *return* is the first kept session (not a continuation chunk) that starts after
   the end of D: the next kept session is what the model's time head predicts. Actual hours to return
   = its first event - the user's last session end as of D.
3. The log end is the latest event of the full split. Horizon h is observable when the end of D + h <=
   the log end; the label "returned within h" is return start <= end of D + h, and users who never
   return are 0 at every observable horizon. Unobservable horizons are reported as such (n = 0, no
   figures).
4. Figures (:func:`backtest_metrics`, pure pandas/numpy): per horizon n, base rate, mean predicted p,
   Brier, ECE and reliability bins; AUC of ``churn_risk`` for "no return within 30 d"; users and the
   observed 30-day no-return rate per risk bucket; MAE of ``median_return_hours`` against the actual
   hours to return over users who returned, both capped at 500 h. The same figures for two baselines
   on the same users: the user's median gap (:func:`user_median_baseline`) and an empirical per-user
   conditional return probability shrunk toward the global gaps (:func:`empirical_baseline`).

``--out`` receives ``backtest.json``, ``reliability.png`` (model and empirical baseline) and
``backtest.md``, each written to a temporary file and renamed into place, and ``run/`` (the trained
model) unless ``--run`` is given. Exit status 2 with one line for a run date outside the log, when no
horizon is observable after it, or for unusable input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract import columns as C
from thrnn.calibration import (
    HORIZONS_HOURS,
    ece_if_calibrated,
    horizon_calibration,
    horizon_label,
    plot_reliability,
    roc_auc,
)
from thrnn.metrics import GAP_CAP_HOURS, return_time_mae
from thrnn.scoring import CHURN_HORIZON_HOURS, horizon_column, run_date_end

log = logging.getLogger(__name__)

RETURN_START = "return_start"  # outcome frame: first kept session starting after the end of D (NaT: none)
ACTUAL_HOURS = "actual_return_hours"
CHURN_SCORE = "churn_score"  # predictor frames: higher = more likely not to return within 30 days
MEDIAN_HOURS = "median_return_hours"
LAW_ONLY = "thrnn_law_only"  # THRNN scored without recalibration, reported beside it
RISK_BUCKETS = ("low", "medium", "high")
EMPIRICAL_K = 5.0  # weight, in gaps, of the global gaps in the empirical baseline
N_BINS = 10
JSON_FILE, PLOT_FILE, MARKDOWN_FILE = "backtest.json", "reliability.png", "backtest.md"


class BacktestError(ValueError):
    """The backtest cannot be run as asked (run date outside the log, nothing observable, bad run)."""


# ---------------------------------------------------------------------------------------- outcomes


def _session_starts(split: Any) -> pd.DataFrame:
    """First event of every kept session that is not a continuation chunk (train and test)."""
    cols = [C.USER_ID, C.EVENT_TIME, C.GAP_BEFORE_SECONDS]
    parts = [f.loc[(f[C.POSITION] == 0) & ~f[C.IS_CONTINUATION].astype(bool), cols] for f in (split.train, split.test)]
    return pd.concat(parts, ignore_index=True)


def log_bounds(split: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first, latest) event time of a split: the latter is the backtest's log end."""
    times = pd.concat([split.train[C.EVENT_TIME], split.test[C.EVENT_TIME]], ignore_index=True)
    if times.empty:
        raise BacktestError("the full log has no kept events")
    return pd.Timestamp(times.min()), pd.Timestamp(times.max())


def first_returns(full: Any, run_date: dt.date) -> pd.DataFrame:
    """``user_key, return_start``: each user's first session of the full split starting at or after the
    end of ``run_date`` (the as-of-D split holds every event before that instant); users who never
    return are absent."""
    cutoff = pd.Timestamp(run_date_end(run_date))
    starts = _session_starts(full)
    after = starts[starts[C.EVENT_TIME] >= cutoff]
    first = after.groupby(C.USER_ID, sort=True)[C.EVENT_TIME].min().rename(RETURN_START).reset_index()
    keys = full.users[[C.USER_ID, C.USER_KEY]]
    return first.merge(keys, on=C.USER_ID, how="left", validate="one_to_one")[[C.USER_KEY, RETURN_START]]


def outcome_frame(as_of_users: pd.DataFrame, full: Any, run_date: dt.date) -> pd.DataFrame:
    """``user_id`` (as of D), ``user_key``, ``in_full`` (the key is a user of the full split) and
    ``return_start`` (NaT when the user never starts a session after D)."""
    full_keys = set(full.users[C.USER_KEY])
    out = as_of_users[[C.USER_ID, C.USER_KEY]].merge(first_returns(full, run_date), on=C.USER_KEY, how="left",
                                                     validate="one_to_one")
    out["in_full"] = out[C.USER_KEY].isin(full_keys)
    out[RETURN_START] = pd.to_datetime(out[RETURN_START], utc=True)
    return out


def label_outcomes(
    churn: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    run_date: dt.date,
    log_end: pd.Timestamp | dt.datetime,
    horizons_hours: Sequence[float] = HORIZONS_HOURS,
) -> pd.DataFrame:
    """One row per churn row: ``user_id``, ``actual_return_hours`` (NaN when no return before the log end)
    and per horizon label L ``observable_L`` (end of D + h <= log end) and ``returned_L`` (1/0, NaN where
    not observable)."""
    cutoff = pd.Timestamp(run_date_end(run_date))
    log_end = pd.Timestamp(log_end)
    df = churn[[C.USER_ID, "last_session_end"]].merge(outcomes[[C.USER_ID, RETURN_START]], on=C.USER_ID,
                                                      how="left", validate="one_to_one")
    start = pd.to_datetime(df[RETURN_START], utc=True)
    if (start < cutoff).any():
        raise ValueError("a return session starts before the end of the run date")
    if (start > log_end).any():
        raise ValueError("a return session starts after the log end")
    last_end = pd.to_datetime(df["last_session_end"], utc=True)
    out = pd.DataFrame({C.USER_ID: df[C.USER_ID].to_numpy(),
                        ACTUAL_HOURS: ((start - last_end).dt.total_seconds() / 3600.0).to_numpy()})
    for h in horizons_hours:
        lab = horizon_label(h)
        observable = cutoff + pd.Timedelta(hours=float(h)) <= log_end
        returned = (start <= cutoff + pd.Timedelta(hours=float(h))).astype(float).to_numpy()  # NaT -> 0
        out[f"observable_{lab}"] = observable
        out[f"returned_{lab}"] = returned if observable else np.nan
    return out


# --------------------------------------------------------------------------------------- baselines


def user_gaps(split: Any) -> pd.DataFrame:
    """``user_id, gap_hours``: every between-session gap of a split (train and test, continuations left out)."""
    starts = _session_starts(split)
    starts = starts[starts[C.GAP_BEFORE_SECONDS].notna()]
    return pd.DataFrame({C.USER_ID: starts[C.USER_ID].to_numpy(),
                         "gap_hours": starts[C.GAP_BEFORE_SECONDS].to_numpy(np.float64) / 3600.0})


def user_median_baseline(gaps: pd.DataFrame, users: np.ndarray, elapsed_hours: np.ndarray) -> pd.DataFrame:
    """Predicted return time = the user's median gap (the global median when the user has none); churn
    score = elapsed hours / that median (a user silent for many of their usual gaps is at risk)."""
    users = np.asarray(users)
    medians = gaps.groupby(C.USER_ID)["gap_hours"].median()
    global_median = float(gaps["gap_hours"].median()) if len(gaps) else math.nan
    median = pd.Series(users).map(medians).fillna(global_median).to_numpy(np.float64)
    # gaps exceed the session gap, so a zero median is impossible; the floor only guards the division
    score = np.asarray(elapsed_hours, dtype=np.float64) / np.maximum(median, 1e-9)
    return pd.DataFrame({C.USER_ID: users, MEDIAN_HOURS: median, CHURN_SCORE: score})


def _share_above(sorted_gaps: np.ndarray, x: float) -> float:
    """How many of ``sorted_gaps`` are > x."""
    return float(len(sorted_gaps) - np.searchsorted(sorted_gaps, x, side="right"))


def _empirical_p(u: np.ndarray, g: np.ndarray, e: float, h: float, k: float) -> float:
    """:func:`empirical_return_probability` on sorted gaps."""
    n_g = len(g)
    g_above = _share_above(g, e) / n_g if n_g else 0.0
    g_within = g_above - (_share_above(g, e + h) / n_g if n_g else 0.0)
    u_above = _share_above(u, e)
    u_within = u_above - _share_above(u, e + h)
    den = u_above + k * g_above
    if den > 0:
        return (u_within + k * g_within) / den
    return g_within / g_above if g_above > 0 else 0.0


def empirical_return_probability(
    user_gaps_hours: np.ndarray,
    global_gaps_hours: np.ndarray,
    elapsed_hours: float,
    horizon_hours: float,
    k: float = EMPIRICAL_K,
) -> float:
    """P(return within h | no return for e hours) from the user's own gaps, shrunk toward the global ones:

    ``(#user gaps in (e, e+h] + k * global share in (e, e+h]) / (#user gaps > e + k * global share > e)``;
    when the denominator is 0, the global conditional share, and 0 when no gap at all is > e.
    """
    u = np.sort(np.asarray(user_gaps_hours, dtype=np.float64))
    g = np.sort(np.asarray(global_gaps_hours, dtype=np.float64))
    return _empirical_p(u, g, float(elapsed_hours), float(horizon_hours), float(k))


def empirical_baseline(
    gaps: pd.DataFrame,
    users: np.ndarray,
    elapsed_hours: np.ndarray,
    horizons_hours: Sequence[float] = HORIZONS_HOURS,
    k: float = EMPIRICAL_K,
) -> pd.DataFrame:
    """``user_id``, ``p_return_<h>`` per horizon and the churn score 1 - P(return within 30 d | elapsed),
    each from :func:`empirical_return_probability`."""
    users = np.asarray(users)
    elapsed = np.asarray(elapsed_hours, dtype=np.float64)
    global_gaps = np.sort(gaps["gap_hours"].to_numpy(np.float64))
    by_user = {u: np.sort(g.to_numpy(np.float64)) for u, g in gaps.groupby(C.USER_ID)["gap_hours"]}
    none = np.zeros(0)
    out = pd.DataFrame({C.USER_ID: users})
    for h in dict.fromkeys([*horizons_hours, CHURN_HORIZON_HOURS]):
        out[horizon_column(h)] = [_empirical_p(by_user.get(u, none), global_gaps, e, float(h), float(k))
                                  for u, e in zip(users.tolist(), elapsed.tolist(), strict=True)]
    out[CHURN_SCORE] = 1.0 - out[horizon_column(CHURN_HORIZON_HOURS)]
    return out


# ----------------------------------------------------------------------------------------- figures


def _float(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def predictor_figures(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    horizons_hours: Sequence[float] = HORIZONS_HOURS,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Brier/ECE/reliability per horizon, AUC for no return within 30 d and the capped MAE of one predictor.

    ``labels`` comes from :func:`label_outcomes`; ``predictions`` holds ``user_id``, ``churn_score`` and
    optionally ``p_return_<h>`` columns (probabilities) and ``median_return_hours``; a figure whose
    predictions are missing is None. Each horizon also gets the AUC of 1 - p (else of the churn score)
    for "no return within h", which still ranks users when 30 d is not observable.
    """
    df = labels.merge(predictions, on=C.USER_ID, how="left", validate="one_to_one")
    horizons: dict[str, dict[str, Any]] = {}
    p_by_h, y_by_h = {}, {}
    for h in horizons_hours:
        lab = horizon_label(h)
        obs = df[f"observable_{lab}"].to_numpy(bool)
        y = df.loc[obs, f"returned_{lab}"].to_numpy(np.float64)
        horizons[lab] = {"hours": float(h), "observable": bool(obs.any()), "n": int(obs.sum()),
                         "base_rate": float(y.mean()) if len(y) else None,
                         "mean_p": None, "brier": None, "ece": None, "ece_if_calibrated": None,
                         "auc_no_return": None, "reliability": []}
        col = horizon_column(h)
        if col in df and len(y):
            p_by_h[float(h)] = df.loc[obs, col].to_numpy(np.float64)
            y_by_h[float(h)] = y
            score = 1.0 - p_by_h[float(h)]
        else:  # no probabilities: rank by the predictor's churn score
            score = df.loc[obs, CHURN_SCORE].to_numpy(np.float64) if CHURN_SCORE in df else None
        if score is not None and len(y):
            horizons[lab]["auc_no_return"] = _float(roc_auc(score, 1.0 - y))
    if p_by_h:
        cal = horizon_calibration(p_by_h, y_by_h, n_bins=n_bins)
        for h in p_by_h:
            lab = horizon_label(h)
            horizons[lab].update(mean_p=_float(cal[f"mean_p_{lab}"]), brier=_float(cal[f"brier_{lab}"]),
                                 ece=_float(cal[f"ece_{lab}"]), reliability=cal["reliability"][lab],
                                 ece_if_calibrated=_float(ece_if_calibrated(p_by_h[h], n_bins)))
    lab30 = horizon_label(CHURN_HORIZON_HOURS)
    auc, auc_n = None, 0
    if f"observable_{lab30}" in df and CHURN_SCORE in df:
        obs = df[f"observable_{lab30}"].to_numpy(bool)
        auc_n = int(obs.sum())
        if auc_n:
            no_return = 1.0 - df.loc[obs, f"returned_{lab30}"].to_numpy(np.float64)
            auc = _float(roc_auc(df.loc[obs, CHURN_SCORE].to_numpy(np.float64), no_return))
    mae, mae_n = None, 0
    returned = df[ACTUAL_HOURS].notna().to_numpy()
    if MEDIAN_HOURS in df and returned.any():
        got = return_time_mae(df.loc[returned, ACTUAL_HOURS].to_numpy(np.float64),
                              df.loc[returned, MEDIAN_HOURS].to_numpy(np.float64), cap_hours=GAP_CAP_HOURS)
        mae, mae_n = _float(got["mae_hours"]), int(got["n_gaps"])
    return {"horizons": horizons, "auc_no_return_30d": auc, "auc_n": auc_n, "mae_hours": mae, "mae_n": mae_n}


def bucket_figures(labels: pd.DataFrame, churn: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per risk bucket: users, their mean churn risk and the observed 30-day no-return rate (None when
    30 d is not observable or the bucket is empty)."""
    lab30 = horizon_label(CHURN_HORIZON_HOURS)
    df = labels.merge(churn[[C.USER_ID, "churn_risk", "risk_bucket"]], on=C.USER_ID, validate="one_to_one")
    out = {}
    for bucket in RISK_BUCKETS:
        sel = df[df["risk_bucket"] == bucket]
        obs = sel[sel[f"observable_{lab30}"]]
        out[bucket] = {
            "users": len(sel),
            "mean_churn_risk": float(sel["churn_risk"].mean()) if len(sel) else None,
            "observable_users": len(obs),
            "no_return_30d_rate": float(1.0 - obs[f"returned_{lab30}"].mean()) if len(obs) else None,
        }
    return out


def backtest_metrics(
    churn: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    run_date: dt.date,
    log_end: pd.Timestamp | dt.datetime,
    risk_thresholds: tuple[float, float] | None = None,
    baselines: Mapping[str, pd.DataFrame] | None = None,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Every figure of the backtest from the churn frame (``score_users``'s, with ``risk_bucket``; it is
    computed from ``risk_thresholds`` when absent) and the outcome frame (``user_id, return_start``).

    ``baselines`` maps a name to a predictions frame (see :func:`predictor_figures`) on the same users.
    """
    if "risk_bucket" not in churn:
        from thrnn.pipeline.checks import risk_bucket

        churn = churn.assign(risk_bucket=risk_bucket(churn["churn_risk"], risk_thresholds or _default_thresholds()))
    labels = label_outcomes(churn, outcomes, run_date=run_date, log_end=log_end)
    model = churn[[C.USER_ID, MEDIAN_HOURS, *[horizon_column(h) for h in HORIZONS_HOURS]]].assign(
        **{CHURN_SCORE: churn["churn_risk"].to_numpy()})
    figures = predictor_figures(labels, model, n_bins=n_bins)
    figures["risk_buckets"] = bucket_figures(labels, churn)
    returned = labels[ACTUAL_HOURS].notna()
    return {
        "users_scored": len(labels),
        "users_returned": int(returned.sum()),
        "users_never_returned": int((~returned).sum()),
        "observable": {horizon_label(h): {"hours": float(h), "observable": figures["horizons"][horizon_label(h)]["observable"],
                                          "users": figures["horizons"][horizon_label(h)]["n"]}
                       for h in HORIZONS_HOURS},
        "model": figures,
        "baselines": {name: predictor_figures(labels, frame, n_bins=n_bins) for name, frame in (baselines or {}).items()},
    }


def backtest_published(
    rows: pd.DataFrame,
    split_now: Any,
    published_date: dt.date,
    observed_until: pd.Timestamp | dt.datetime,
    *,
    risk_thresholds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The figures of :func:`backtest_metrics` for churn rows already published for ``published_date``
    (``user_key``, ``last_session_end``, the ``p_return_*`` columns, ``median_return_hours``,
    ``churn_risk``, ``risk_bucket``), against a later split that holds every event up to
    ``observed_until`` (the nightly's own split of a later night, as of the end of its run date).
    Users are joined on their key; a user absent from the later split never returned."""
    need = [C.USER_KEY, "last_session_end", MEDIAN_HOURS, "churn_risk", *[horizon_column(h) for h in HORIZONS_HOURS]]
    missing = [c for c in need if c not in rows]
    if missing:
        raise BacktestError(f"the published rows lack {', '.join(missing)}")
    if rows.empty:
        raise BacktestError(f"no churn rows were published for {published_date}")
    churn = rows.reset_index(drop=True).copy()
    churn[C.USER_ID] = np.arange(len(churn), dtype=np.int64)
    churn["last_session_end"] = pd.to_datetime(churn["last_session_end"], utc=True)
    outcomes = churn[[C.USER_ID, C.USER_KEY]].merge(first_returns(split_now, published_date), on=C.USER_KEY,
                                                    how="left", validate="one_to_one")
    outcomes[RETURN_START] = pd.to_datetime(outcomes[RETURN_START], utc=True)
    outcomes["in_full"] = outcomes[C.USER_KEY].isin(set(split_now.users[C.USER_KEY]))
    figures = backtest_metrics(churn, outcomes, run_date=published_date, log_end=pd.Timestamp(observed_until),
                               risk_thresholds=risk_thresholds)
    return _clean({
        "run_date": published_date.isoformat(),
        "run_date_end": _iso(pd.Timestamp(run_date_end(published_date))),
        "log_end": _iso(pd.Timestamp(observed_until)),
        "days_after_run_date": (pd.Timestamp(observed_until) - pd.Timestamp(run_date_end(published_date))
                                ).total_seconds() / 86400.0,
        "users_missing_in_full": int((~outcomes["in_full"]).sum()),
        "risk_thresholds": list(risk_thresholds or _default_thresholds()),
        **figures,
    })


def _default_thresholds() -> tuple[float, float]:
    from thrnn.pipeline.params import RunParams

    return tuple(RunParams().risk_thresholds)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ driver


@contextlib.contextmanager
def _spark_session() -> Iterator[Any]:
    """The active Spark session (left running) or a new one (stopped afterwards)."""
    from pyspark.sql import SparkSession

    from jobs.spark import build_spark

    existing = SparkSession.getActiveSession()
    spark = existing or build_spark("thrnn-backtest", conf={"spark.ui.enabled": "false"})
    try:
        yield spark
    finally:
        if existing is None:
            spark.stop()


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    log.info("%s ...", what)
    t0 = time.monotonic()
    yield
    log.info("%s: %.1f s", what, time.monotonic() - t0)


def _clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars to Python, non-finite floats to None, timestamps to ISO strings."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, pd.Timestamp | dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def check_run_date(run_date: dt.date, log_start: pd.Timestamp, log_end: pd.Timestamp) -> None:
    """Refuse a run date whose end is outside the log, or leaves less than the shortest horizon after it."""
    cutoff = pd.Timestamp(run_date_end(run_date))
    if cutoff <= log_start:
        raise BacktestError(f"run date {run_date} is before the log, which starts {_iso(log_start)}")
    if cutoff >= log_end:
        raise BacktestError(f"run date {run_date} is at or after the end of the log ({_iso(log_end)}): "
                            "nothing happened after it")
    shortest = min(HORIZONS_HOURS)
    if cutoff + pd.Timedelta(hours=shortest) > log_end:
        raise BacktestError(f"no scored user has an observable horizon: the log ends {_iso(log_end)}, less than "
                            f"{shortest:g} h after the end of run date {run_date}")


def run_backtest(
    inputs: Sequence[str],
    fmt: str,
    run_date: dt.date,
    out: str | Path,
    *,
    session_gap_seconds: float | None = None,
    format_options: Mapping[str, Any] | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    device: str = "auto",
    work: str | Path | None = None,
    train_dir: str | Path | None = None,
    risk_thresholds: tuple[float, float] | None = None,
    progress: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """The whole backtest (module docstring); writes the three files into ``out`` and returns the JSON.

    Without ``run_dir`` a model is trained into ``train_dir`` (default ``out/run``); ``name`` labels the
    report (default: the format).
    """
    from jobs.sessionize import run as sessionize
    from thrnn.checkpoint import load_run
    from thrnn.config import config_for, preset_for_format
    from thrnn.data import load_sessions
    from thrnn.device import describe, resolve_device
    from thrnn.io import read_split
    from thrnn.pipeline.checks import risk_bucket
    from thrnn.scoring import score_users
    from thrnn.train import train_sessions

    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = tuple(risk_thresholds or _default_thresholds())
    inputs = [str(p) for p in inputs]
    options = dict(format_options or {})
    cfg = None
    if run_dir is None:  # a bad preset or override fails here, before any Spark work
        try:
            cfg = config_for(preset or preset_for_format(fmt), "thrnn", **{**(overrides or {}), "device": device})
        except ValueError as exc:
            raise BacktestError(str(exc)) from exc
    tmp_work = None if work is not None else Path(tempfile.mkdtemp(prefix="thrnn-backtest-"))
    work_dir = Path(work) if work is not None else tmp_work
    assert work_dir is not None
    try:
        with _spark_session() as spark:
            with _step("sessionize the full log"):
                full_stats = sessionize(spark, fmt, inputs, work_dir / "full", session_gap_seconds=session_gap_seconds,
                                        **options)
            full = read_split(work_dir / "full")
            log_start, log_end = log_bounds(full)
            check_run_date(run_date, log_start, log_end)
            with _step(f"sessionize as of {run_date}"):
                as_of_stats = sessionize(spark, fmt, inputs, work_dir / "as_of", session_gap_seconds=session_gap_seconds,
                                         run_date=run_date, **options)
        split = read_split(work_dir / "as_of")
        data = load_sessions(split)
        dev = resolve_device(device)
        if cfg is not None:
            run_dir = Path(train_dir) if train_dir is not None else out / "run"
            with _step(f"train {cfg.model} ({cfg.epochs} epochs, {describe(dev)})"):
                train_sessions(data, run_dir, cfg, progress=progress)
            trained = True
        else:
            trained = False
        model, cfg = load_run(run_dir, dev)
        if not model.temporal:
            raise BacktestError(f"{run_dir} holds a {cfg.model} model, which has no time head; the backtest needs thrnn")
        if (model.n_users, model.n_items) != (data.n_users, data.n_items):
            raise BacktestError(f"{run_dir} was trained on another split ({model.n_users} users, {model.n_items} "
                                f"items; the split as of {run_date} has {data.n_users} and {data.n_items})")
        with _step(f"score every user at {run_date}"):
            _, churn = score_users(model, data, cfg, run_date=run_date, horizons_hours=HORIZONS_HOURS, device=dev)
            recalibrated = "recalibration" in churn.attrs
            if recalibrated:  # what the law alone would publish, to show what recalibration changes
                _, law_only = score_users(model, data, cfg, run_date=run_date, horizons_hours=HORIZONS_HOURS,
                                          device=dev, recalibrate=False)
        if churn.empty:
            raise BacktestError(f"no user was scored at {run_date}")
        churn["risk_bucket"] = risk_bucket(churn["churn_risk"], thresholds)
        outcomes = outcome_frame(split.users, full, run_date)
        outcomes = outcomes[outcomes[C.USER_ID].isin(churn[C.USER_ID])]
        with _step("baselines"):
            gaps = user_gaps(split)
            users, elapsed = churn[C.USER_ID].to_numpy(), churn["elapsed_hours"].to_numpy(np.float64)
            baselines = {"user_median": user_median_baseline(gaps, users, elapsed),
                         "empirical": empirical_baseline(gaps, users, elapsed)}
            if recalibrated:
                baselines[LAW_ONLY] = law_only[[C.USER_ID, MEDIAN_HOURS, *[horizon_column(h) for h in HORIZONS_HOURS]]
                                               ].assign(**{CHURN_SCORE: law_only["churn_risk"].to_numpy()})
        figures = backtest_metrics(churn, outcomes, run_date=run_date, log_end=log_end,
                                   risk_thresholds=thresholds, baselines=baselines)
    finally:
        if tmp_work is not None:
            shutil.rmtree(tmp_work, ignore_errors=True)
    result = {
        "run_date": run_date.isoformat(),
        "run_date_end": _iso(pd.Timestamp(run_date_end(run_date))),
        "log_start": _iso(log_start),
        "log_end": _iso(log_end),
        "days_after_run_date": (log_end - pd.Timestamp(run_date_end(run_date))).total_seconds() / 86400.0,
        "name": name or fmt,
        "format": fmt,
        "inputs": inputs,
        "session_gap_seconds": as_of_stats.get("session_gap_seconds"),
        "format_options": options,
        "risk_thresholds": list(thresholds),
        "users_missing_in_full": int((~outcomes["in_full"]).sum()),
        "splits": {part: {k: st.get(k) for k in ("users", "sessions", "events", "items", "excluded_after_run_date")}
                   for part, st in (("as_of", as_of_stats), ("full", full_stats))},
        **figures,
        "run_dir": str(run_dir),
        "trained": trained,
        "config": cfg.to_dict(),
        "device": describe(dev),
        "recalibration": churn.attrs.get("recalibration"),
        "baseline_notes": {
            "user_median": "predicted return = the user's median gap as of D (global median without gaps); "
                           "churn score = elapsed / that median; no probabilities",
            LAW_ONLY: "THRNN's figures without the recalibration on the weeks before D (the law alone)",
            "empirical": f"P(return within h | elapsed e) from the user's gaps as of D shrunk toward the global "
                         f"gaps with k = {EMPIRICAL_K:g}; churn score = 1 - P(30 d); no return time",
        },
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    result = _clean(result)
    write_outputs(result, out)
    return result


def write_outputs(result: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """backtest.json, reliability.png and backtest.md in ``out``, each via a temporary file and a rename."""
    from thrnn.files import atomic_write, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reliability = {}
    for name, figs in (("THRNN", result["model"]), ("empirical baseline", result["baselines"].get("empirical"))):
        if figs:
            bins = {lab: h["reliability"] for lab, h in horizons_in_order(figs) if h["reliability"]}
            if bins:
                reliability[name] = bins
    plot = plot_reliability(reliability, out / PLOT_FILE, f"Backtest {result['name']} at {result['run_date']}")
    text = format_markdown(result).encode()
    return {"json": write_json_atomic(result, out / JSON_FILE), "plot": plot,
            "markdown": atomic_write(out / MARKDOWN_FILE, lambda f: f.write(text))}


def horizons_in_order(figs: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A predictor's horizons, shortest first (a reloaded JSON has its keys sorted as text)."""
    return sorted(figs["horizons"].items(), key=lambda kv: kv[1]["hours"])


def predictors_in_order(result: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """THRNN, THRNN's law alone, then the baselines by name."""
    rest = sorted((k, v) for k, v in result["baselines"].items() if k != LAW_ONLY)
    law = [("THRNN, law only", result["baselines"][LAW_ONLY])] if LAW_ONLY in result["baselines"] else []
    return [("THRNN", result["model"]), *law, *rest]


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def format_markdown(result: Mapping[str, Any]) -> str:
    """A short readable report of a backtest result."""
    preds = dict(predictors_in_order(result))
    lines = [
        f"# Backtest of {result['name']} at {result['run_date']}",
        "",
        f"Scored {result['users_scored']} users at the end of {result['run_date']} ({result['run_date_end']}); the log "
        f"ends {result['log_end']} ({result['days_after_run_date']:.1f} days later). {result['users_returned']} users "
        f"came back before the log end, {result['users_never_returned']} did not. Model run: `{result['run_dir']}`.",
        "",
        "| predictor | horizon | users | base rate | mean p | Brier | ECE | ECE if calibrated | AUC, no return within h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, figs in preds.items():
        for lab, h in horizons_in_order(figs):
            if not h["observable"]:
                lines.append(f"| {name} | {lab} | not observable | – | – | – | – | – | – |")
                continue
            lines.append(f"| {name} | {lab} | {h['n']} | {_fmt(h['base_rate'])} | {_fmt(h['mean_p'])} | "
                         f"{_fmt(h['brier'])} | {_fmt(h['ece'])} | {_fmt(h.get('ece_if_calibrated'))} | "
                         f"{_fmt(h['auc_no_return'])} |")
    lines += ["", "| predictor | AUC, no return within 30 d | MAE of the median return time (h, capped at 500) | "
                  "users returned |", "|---|---|---|---|"]
    for name, figs in preds.items():
        n = figs["mae_n"] if figs["mae_hours"] is not None else "–"
        lines.append(f"| {name} | {_fmt(figs['auc_no_return_30d'])} | {_fmt(figs['mae_hours'], '.1f')} | {n} |")
    lines += ["", f"Risk buckets (thresholds {result['risk_thresholds']}):", "",
              "| bucket | users | mean churn risk | observed 30-day no-return rate |", "|---|---|---|---|"]
    for bucket in RISK_BUCKETS:
        b = result["model"]["risk_buckets"][bucket]
        rate = _fmt(b["no_return_30d_rate"]) if b["no_return_30d_rate"] is not None else (
            "30 d not observable" if b["users"] else "–")
        lines.append(f"| {bucket} | {b['users']} | {_fmt(b['mean_churn_risk'])} | {rate} |")
    return "\n".join(lines) + "\n"


def format_summary(result: Mapping[str, Any]) -> str:
    """A few lines for the terminal."""
    m = result["model"]
    parts = [f"backtest at {result['run_date']}: {result['users_scored']} users scored, log ends {result['log_end']}"]
    for lab, h in horizons_in_order(m):
        parts.append(f"  {lab}: " + (f"n {h['n']}, base rate {_fmt(h['base_rate'])}, mean p {_fmt(h['mean_p'])}, "
                                     f"Brier {_fmt(h['brier'])}, ECE {_fmt(h['ece'])}" if h["observable"]
                                     else "not observable"))
    parts.append(f"  AUC no return 30 d {_fmt(m['auc_no_return_30d'])}; MAE median {_fmt(m['mae_hours'], '.1f')} h "
                 f"over {m['mae_n']} returns")
    for name, b in sorted(result["baselines"].items()):
        figs = [f"AUC no return 30 d {_fmt(b['auc_no_return_30d'])}"]
        figs += [f"Brier {lab} {_fmt(h['brier'])}" for lab, h in horizons_in_order(b) if h["brier"] is not None]
        if b["mae_hours"] is not None:
            figs.append(f"MAE median {_fmt(b['mae_hours'], '.1f')} h")
        parts.append(f"  baseline {name}: " + ", ".join(figs))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- CLI

_EVENTS_GROUP = "events format options"


def _add_events_options(p: argparse.ArgumentParser) -> None:
    """The events-format options of ``python -m jobs.sessionize``, taken from its parser (same flags,
    defaults and help)."""
    from jobs.sessionize.__main__ import build_parser

    for group in build_parser()._action_groups:
        if group.title == _EVENTS_GROUP:
            mine = p.add_argument_group(_EVENTS_GROUP, "apply to --format events only")
            for action in group._group_actions:
                mine._add_action(action)


def _format_options(args: argparse.Namespace) -> dict[str, Any]:
    """EventsOptions fields from the parsed events options (events format only)."""
    from jobs.sessionize.job import EventsOptions

    if args.format != "events":
        return {}
    opts = {f.name: getattr(args, f.name) for f in dataclasses.fields(EventsOptions)}
    if opts.get("column_names"):
        opts["column_names"] = tuple(str(opts["column_names"]).split(","))
    return opts


def _thresholds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not 0 <= low < high <= 1:
        raise argparse.ArgumentTypeError(f"thresholds must satisfy 0 <= low < high <= 1, got {text!r}")
    return low, high


def configure_parser(p: argparse.ArgumentParser) -> None:
    from contract.constants import DEFAULT_GAP_SECONDS, FORMATS
    from thrnn.config import DEVICES, PRESETS

    p.description = ("Backtest the churn figures: sessionize a raw log as of a past run date, train THRNN on it "
                     "(or reuse --run), score every user, and compare return probabilities, churn risk and return "
                     "times with the sessions that really followed (backtest.json, reliability.png, backtest.md).")
    p.add_argument("--input", required=True, nargs="+", dest="inputs", metavar="RAW",
                   help="raw log files, folders or globs (gzip is fine)")
    p.add_argument("--format", required=True, choices=FORMATS, help="layout of the raw input")
    p.add_argument("--run-date", required=True, type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                   help="the past night to check: events after the end of this UTC day are what happened next")
    p.add_argument("--out", required=True, help="folder for backtest.json, reliability.png, backtest.md (and run/)")
    p.add_argument("--session-gap-seconds", type=float, default=None,
                   help=f"a gap larger than this starts a new session (default per format: {DEFAULT_GAP_SECONDS})")
    p.add_argument("--preset", choices=PRESETS, default=None, help="training preset (default: the format's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the preset's)")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="reuse this run folder (trained on the split as of --run-date) instead of training")
    p.add_argument("--device", choices=DEVICES, default="auto", help="training and scoring device (default auto)")
    p.add_argument("--work", default=None,
                   help="folder for the two sessionized splits (default: a temporary folder, removed afterwards)")
    p.add_argument("--risk-thresholds", type=_thresholds, default=None, metavar="LOW,HIGH",
                   help="risk bucket thresholds on churn risk (default: the nightly's, 0.3,0.7)")
    p.add_argument("--no-progress", action="store_true", help="no training progress bar")
    _add_events_options(p)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jobs.sessionize.io import InputError
    from jobs.sessionize.job import SessionizeError

    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    try:
        result = run_backtest(
            args.inputs, args.format, args.run_date, args.out, session_gap_seconds=args.session_gap_seconds,
            format_options=_format_options(args), preset=args.preset, overrides=overrides, run_dir=args.run,
            device=args.device, work=args.work, risk_thresholds=args.risk_thresholds, progress=not args.no_progress,
        )
    except (BacktestError, InputError, SessionizeError, FileNotFoundError) as exc:
        print(f"backtest: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    print(format_summary(result))
    print(f"-> {Path(args.out) / JSON_FILE}, {PLOT_FILE}, {MARKDOWN_FILE}")
    return 0
