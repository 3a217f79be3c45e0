"""Recalibration of the published return probabilities on the recent past ("anchors").

The return-time law is fitted on the gaps a history shows, and a finite history shows short gaps
more often than long ones: users who went quiet for weeks contribute few gaps. Conditioned on a long
elapsed time the law's tail then decides ``P(return within h | not back yet)``, and it is too sure of
itself (docs/return_time.md, docs/backtest.md). Nothing after the run date is known, but the nights
before it are: at an anchor ``T = end of run date - h - k * step`` the figures can be computed from
the sessions that had ended by ``T`` and compared with what the history shows in ``(T, T + h]``.

For each horizon ``h`` :func:`fit_recalibration` builds such examples at up to
:data:`N_ANCHORS` anchors a week apart (the same weekday as the night it serves), and fits Platt
scaling ``logit p' = a + b logit p`` to them, pulled toward the identity by a small ridge so that a
few hundred examples cannot swing it. :meth:`Recalibration.apply` maps tonight's figures and keeps
them ordered across horizons (``p_1d <= p_7d <= p_30d``). A horizon with too few examples (a history
shorter than the horizon) keeps the law's figures, and says so.

The law at an anchor comes from the covariates after each user's last session ended by ``T``, which
use sessions up to that one only (:mod:`thrnn.time_features`); it is available for the log-normal head
without the inter-session state (the product presets' ``time_state false``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from thrnn.churn import ChurnLaw, fit_no_return

log = logging.getLogger(__name__)

N_ANCHORS = 4
ANCHOR_STEP_HOURS = 168.0  # a week: every anchor falls on the weekday of the night it serves
MIN_EXAMPLES = 50  # fewer user-anchor examples for a horizon: keep the law's figures
RIDGE = 1e-3  # per-example penalty on (a, b - 1): a few hundred examples stay near the identity
_EPS = 1e-6
_HOUR_US = 3_600_000_000


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(p: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> tuple[float, float]:
    """``(a, b)`` maximising the mean Bernoulli log-likelihood of ``y`` under ``sigmoid(a + b logit p)``
    minus ``ridge * (a² + (b - 1)²)`` (L-BFGS from the identity)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"p and y must be 1-d of the same length, got {p.shape} and {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be 0 or 1")
    # scoring runs under inference mode; the fit needs autograd on fresh tensors
    with torch.inference_mode(False), torch.enable_grad():
        x, t = torch.as_tensor(logit(p)), torch.as_tensor(y)
        ab = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([ab], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = ab[0] + ab[1] * x
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, t)
                    + ridge * (ab[0] ** 2 + (ab[1] - 1.0) ** 2))
            loss.backward()
            return loss

        opt.step(closure)
    a, b = ab.detach().tolist()
    return float(a), float(b)


@dataclass(frozen=True)
class SessionTimes:
    """What the anchors need of a history, one entry per session sorted by (user, session):
    user, start and end in epoch microseconds, and whether the session is a return (its gap counts:
    not a user's first session, not a continuation chunk)."""

    users: np.ndarray
    start_us: np.ndarray
    end_us: np.ndarray
    is_return: np.ndarray


def anchor_examples(times: SessionTimes, law_of_rows: Callable[[np.ndarray], object], anchor_us: int,
                    horizon_hours: float) -> tuple[np.ndarray, np.ndarray]:
    """``(p, y)`` for every user with a session ended by the anchor ``T``: ``p`` the figure the night
    of ``T`` would have published (``P(return within h | not back yet)`` from the law of the last
    session ended by ``T`` and the no-return chance fitted on those users' open gaps at ``T``), ``y``
    whether a session of the user started in ``(T, T + h]``. Users inside a session at ``T`` are left
    out (they have not left)."""
    ended = times.end_us <= anchor_us
    rows = np.nonzero(ended)[0]
    if rows.size == 0:
        return np.zeros(0), np.zeros(0)
    users = times.users[rows]
    # the last ended session per user: rows are sorted by (user, session), so it is the last of its run
    last = rows[np.r_[users[1:] != users[:-1], True]]
    last_users = times.users[last]
    started = times.start_us <= anchor_us
    in_session = np.zeros(int(times.users.max()) + 1, dtype=bool)
    in_session[times.users[started & ~ended]] = True
    last = last[~in_session[last_users]]
    if last.size == 0:
        return np.zeros(0), np.zeros(0)
    last_users = times.users[last]
    nxt = np.minimum(last + 1, times.users.size - 1)
    has_next = (last + 1 < times.users.size) & (times.users[nxt] == last_users)
    y = (has_next & (times.start_us[nxt] <= anchor_us + horizon_hours * _HOUR_US)).astype(np.float64)
    law = law_of_rows(last)
    e = torch.as_tensor((anchor_us - times.end_us[last]) / _HOUR_US, dtype=torch.float64)
    n_returns = int((times.is_return & (times.start_us <= anchor_us)).sum())
    p0 = fit_no_return(law.log_survival(e).numpy(), n_returns)
    p = ChurnLaw(law, p0).return_within(e, horizon_hours).numpy()
    return p, y


@dataclass(frozen=True)
class HorizonMap:
    hours: float
    a: float
    b: float
    examples: int
    anchors: int

    @property
    def identity(self) -> bool:
        return self.a == 0.0 and self.b == 1.0


class Recalibration:
    """Per-horizon Platt maps; :meth:`apply` maps a ``{hours: p}`` dict and keeps it ordered."""

    def __init__(self, maps: Sequence[HorizonMap]) -> None:
        self.maps = {m.hours: m for m in maps}

    def apply(self, p_by_hours: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
        out: dict[float, np.ndarray] = {}
        floor = None
        for h in sorted(p_by_hours):
            p = np.asarray(p_by_hours[h], dtype=np.float64)
            m = self.maps.get(h)
            if m is not None and not m.identity:
                p = 1.0 / (1.0 + np.exp(-(m.a + m.b * logit(p))))
            # a longer horizon can only add returns
            floor = p if floor is None else np.maximum(p, floor)
            out[h] = floor
        return out

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {f"{h:g}h": {"a": m.a, "b": m.b, "examples": m.examples, "anchors": m.anchors}
                for h, m in sorted(self.maps.items())}


def fit_recalibration(times: SessionTimes, law_of_rows: Callable[[np.ndarray], object], night_end_us: int,
                      horizons_hours: Sequence[float], *, n_anchors: int = N_ANCHORS,
                      step_hours: float = ANCHOR_STEP_HOURS, min_examples: int | None = None) -> Recalibration:
    """One :class:`HorizonMap` per horizon from anchors ``night_end - h - k * step``, k < ``n_anchors``,
    that have sessions before them (module docstring); the identity where fewer than ``min_examples``
    examples exist (default :data:`MIN_EXAMPLES`)."""
    min_examples = MIN_EXAMPLES if min_examples is None else min_examples
    maps = []
    first = int(times.end_us.min()) if times.end_us.size else night_end_us
    for h in sorted(set(float(x) for x in horizons_hours)):
        ps, ys, used = [], [], 0
        for k in range(n_anchors):
            anchor = night_end_us - int(round((h + k * step_hours) * _HOUR_US))
            if anchor < first:
                break
            p, y = anchor_examples(times, law_of_rows, anchor, h)
            if p.size:
                ps.append(p)
                ys.append(y)
                used += 1
        n = int(sum(p.size for p in ps))
        if n < min_examples:
            log.info("return within %g h: %d examples at %d anchors (< %d): the law's figures are kept",
                     h, n, used, min_examples)
            maps.append(HorizonMap(h, 0.0, 1.0, n, used))
            continue
        a, b = fit_platt(np.concatenate(ps), np.concatenate(ys))
        if not (math.isfinite(a) and math.isfinite(b)) or b <= 0.0:
            # a map that reverses or flattens the ranking is noise, not calibration
            log.warning("return within %g h: no usable recalibration (a=%s, b=%s): the law's figures are kept",
                        h, a, b)
            maps.append(HorizonMap(h, 0.0, 1.0, n, used))
            continue
        log.info("return within %g h: recalibrated on %d examples at %d anchors: logit p' = %.3f + %.3f logit p",
                 h, n, used, a, b)
        maps.append(HorizonMap(h, a, b, n, used))
    return Recalibration(maps)
