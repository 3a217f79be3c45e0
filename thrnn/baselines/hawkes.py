"""Per-user Hawkes-process baseline for the time until the next session.

Each user's sessions form a point process on a *gap timeline* (as in the research code): time runs
only across gaps, session durations are left out, so the waiting time after an event is exactly the
gap the metric scores. Gaps are clipped at ``cap_hours`` (the model's bound) on the timeline.

Model: univariate Hawkes with exponential kernel, ``λ(t) = μ + Σ_{t_i < t} α β e^{-β (t - t_i)}``
(time in hours); ``α`` is the branching ratio, kept below 1 for stationarity (the usual
``α' e^{-β t}`` form with ``α' = α β < β``). ``(μ, α, β)`` are fitted per user by maximum likelihood
on the training timeline with scipy's L-BFGS-B from fixed starting points (deterministic).

Prediction for each test gap, teacher-forced: the history is the training timeline plus the true test
events before it; with ``A = α β Σ_i e^{-β (t_last - t_i)}`` (the last event included) the waiting
time ``W`` has ``S(s) = exp(-μ s - (A / β)(1 - e^{-β s}))`` and the prediction is ``E[W] = ∫ S``,
integrated numerically to ``horizon_hours`` plus the tail ``S(horizon) / μ`` (the excitation has
decayed by then). Users with fewer than ``min_events`` training events, or whose fit fails, get the
global median gap.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from tqdm.auto import tqdm

from contract import columns as C

try:  # pinned in constraints.txt (via scikit-learn); optional here
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None

MU_BOUNDS = (1e-7, 10.0)  # events per hour
ALPHA_BOUNDS = (0.0, 0.99)  # branching ratio
BETA_BOUNDS = (1e-3, 20.0)  # per hour: decay time-scales from 3 min to ~6 weeks
# The likelihood uses an (n, n) lag matrix; heavier users are fitted on their latest events only.
MAX_FIT_EVENTS = 1500


@dataclass(frozen=True)
class HawkesParams:
    mu: float
    alpha: float
    beta: float
    loglik: float


def _lags(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lags ``t_i - t_j`` of every pair j < i (flat) and the row ``i`` of each."""
    rows, cols = np.tril_indices(len(times), k=-1)
    return times[rows] - times[cols], rows


def neg_loglik(params: np.ndarray, times: np.ndarray,
               lags: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of event ``times`` (sorted hours) on [t_0, t_n], and its gradient.

    ``lags`` (from :func:`_lags`) can be passed to avoid rebuilding it at every evaluation.
    """
    mu, alpha, beta = (float(p) for p in params)
    lag, rows = lags if lags is not None else _lags(times)
    n = len(times)
    e = np.exp(-beta * lag)
    r = np.bincount(rows, e, minlength=n)  # Σ_{j<i} e^{-β (t_i - t_j)}
    dr = -np.bincount(rows, lag * e, minlength=n)
    lam = mu + alpha * beta * r
    tail = times[-1] - times
    decayed = np.exp(-beta * tail)
    ll = np.sum(np.log(lam)) - mu * (times[-1] - times[0]) - alpha * np.sum(1.0 - decayed)
    inv = 1.0 / lam
    grad = np.array([
        inv.sum() - (times[-1] - times[0]),
        np.sum(beta * r * inv) - np.sum(1.0 - decayed),
        np.sum(alpha * (r + beta * dr) * inv) - alpha * np.sum(tail * decayed),
    ])
    return float(-ll), -grad


def _excitation_sums(times: np.ndarray, beta: float) -> np.ndarray:
    """R_i = Σ_{j<i} e^{-β (t_i - t_j)} by the O(n) recursion R_i = e^{-β d_i} (1 + R_{i-1})."""
    r = np.zeros(len(times))
    acc = 0.0
    for i, f in enumerate(np.exp(-beta * np.diff(times)), start=1):
        acc = f * (1.0 + acc)
        r[i] = acc
    return r


@functools.cache
def _blas_controller() -> Any:
    # built once: scanning the loaded libraries costs ~7 ms, limiting with the cached controller ~0.1 ms
    return ThreadpoolController() if ThreadpoolController is not None else None


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """L-BFGS-B's tiny BLAS calls run ~5x slower under a multi-threaded BLAS on a busy machine."""
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def fit_user(times: np.ndarray) -> HawkesParams | None:
    """Maximum-likelihood ``(μ, α, β)`` for one user's event times (hours); None when it fails."""
    times = np.asarray(times, dtype=np.float64)[-MAX_FIT_EVENTS:]
    span = times[-1] - times[0]
    if len(times) < 2 or span <= 0:
        return None
    lags = _lags(times)
    with _one_blas_thread():
        return _fit(times, lags)


def _fit(times: np.ndarray, lags: tuple[np.ndarray, np.ndarray]) -> HawkesParams | None:
    med = float(np.median(np.diff(times))) or 1.0
    rate = len(times) / (times[-1] - times[0])
    best: HawkesParams | None = None
    bounds = [MU_BOUNDS, ALPHA_BOUNDS, BETA_BOUNDS]
    for alpha0, beta_scale in ((0.3, 1.0), (0.7, 0.1), (0.1, 10.0)):
        x0 = np.array([
            np.clip(rate * (1 - alpha0), *MU_BOUNDS),
            alpha0,
            np.clip(beta_scale / med, *BETA_BOUNDS),
        ])
        res = minimize(neg_loglik, x0, args=(times, lags), method="L-BFGS-B", jac=True, bounds=bounds)
        if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and (best is None or -res.fun > best.loglik):
            best = HawkesParams(float(res.x[0]), float(res.x[1]), float(res.x[2]), float(-res.fun))
    return best


def expected_wait_hours(mu: np.ndarray, beta: np.ndarray, excitation: np.ndarray,
                        horizon_hours: float = 5000.0, n_grid: int = 512) -> np.ndarray:
    """``E[W]`` for intensity ``μ + A e^{-β s}`` after the last event (vectorised; ``A = excitation``)."""
    mu, beta, a = (np.asarray(v, dtype=np.float64)[:, None] for v in (mu, beta, excitation))
    x = np.linspace(0.0, 1.0, n_grid + 1)
    s_grid = horizon_hours * x**3  # dense near 0 where bursts decay
    weights = np.ones_like(x)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    weights *= 3 * horizon_hours * x**2 / (3 * n_grid)
    surv = np.exp(-mu * s_grid - (a / beta) * -np.expm1(-beta * s_grid))
    return surv @ weights + surv[:, -1] / mu[:, 0]


def user_timelines(sessions: pd.DataFrame, cap_hours: float) -> dict[int, tuple[np.ndarray, int]]:
    """``{user: (event times in hours, number of training events)}`` on the gap timeline.

    ``sessions``: one row per session with user_id, session_index, gap_seconds, is_continuation,
    is_test (see :func:`thrnn.baselines.protocol.session_table`).
    """
    s = sessions[~sessions["is_continuation"]].sort_values([C.USER_ID, C.SESSION_INDEX], kind="stable")
    gaps = np.minimum(s["gap_seconds"].fillna(0.0).to_numpy(np.float64) / 3600.0, cap_hours)
    out: dict[int, tuple[np.ndarray, int]] = {}
    users = s[C.USER_ID].to_numpy()
    is_test = s["is_test"].to_numpy(bool)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        times = np.cumsum(np.r_[0.0, gaps[lo + 1 : hi]])
        out[int(users[lo])] = (times, int((~is_test[lo:hi]).sum()))
    return out


def _user_predictions(times: np.ndarray, n_train: int, min_events: int) -> np.ndarray | None:
    """Expected waits for the user's test events (timeline indexes n_train..), None when not fitted."""
    params = fit_user(times[:n_train]) if n_train >= min_events else None
    if params is None:
        return None
    r = _excitation_sums(times, params.beta)
    # the target is event k (k = n_train..len-1); the history ends with event k-1, its jump included
    excitation = params.alpha * params.beta * (1.0 + r[n_train - 1 : len(times) - 1])
    n_test = len(times) - n_train
    return expected_wait_hours(np.full(n_test, params.mu), np.full(n_test, params.beta), excitation)


def hawkes_predictions(sessions: pd.DataFrame, fallback_hours: float, *, cap_hours: float = 500.0,
                       min_events: int = 5, progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Expected gap (hours) for every test gap, in (user, session_index) order.

    Returns ``(predictions, gap_users, info)`` where info counts fitted and fallback users.
    """
    preds: list[np.ndarray] = []
    gap_users: list[np.ndarray] = []
    fitted = fallback = 0
    timelines = user_timelines(sessions, cap_hours)
    with _one_blas_thread():
        for user, (times, n_train) in tqdm(timelines.items(), disable=not progress, desc="hawkes", leave=False):
            n_test = len(times) - n_train
            if n_test <= 0:
                continue
            gap_users.append(np.full(n_test, user, dtype=np.int64))
            pred = _user_predictions(times, n_train, min_events)
            if pred is None:
                fallback += 1
                pred = np.full(n_test, fallback_hours)
            else:
                fitted += 1
            preds.append(pred)
    info = {"hawkes_fitted_users": fitted, "hawkes_fallback_users": fallback}
    if not preds:
        return np.zeros(0), np.zeros(0, dtype=np.int64), info
    out = np.concatenate(preds)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("non-finite Hawkes predictions")
    return out, np.concatenate(gap_users), info
