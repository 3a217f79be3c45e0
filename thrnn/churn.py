"""Churn figures as of a run date: a return-time law, a chance of never returning, and the time elapsed.

The log-normal head models the gap to the next session *given* that there is one; whether a user
comes back at all is fitted as of the scoring date on every gap the history shows (a cure model):
after each session the user stops for good with probability ``p0``, otherwise the gap follows the
head's law ``S``. Every observed gap contributes ``log(1 - p0)`` and every user's open gap (from the
last session to the run date, ``e``: right-censored) ``log(p0 + (1 - p0) S(e))``; :func:`fit_no_return`
maximises the sum over ``p0``. Users who went quiet long ago (``S(e)`` small) are what push ``p0`` up.

With ``S_tot(t) = p0 + (1 - p0) S(t)``, the published figures condition on the elapsed time ``e``:

- ``P(return within h | not back yet) = 1 - S_tot(e + h) / S_tot(e)``;
- the median gap given no return so far: ``S_tot(t) = S_tot(e) / 2`` (the cut-off when there is no
  such ``t``, i.e. when never returning is at least as likely as returning: the point prediction that
  minimises the absolute error once "never" counts as beyond the cut-off);
- ``P(never returns | not back yet) = p0 / S_tot(e)``.

The mean is that of the return time given a return within the cut-off (``p0`` cancels from it).

The RMTPP head's law is defective on its own (``w < 0``); it is used with ``p0 = 0``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_BISECT_STEPS = 60
_GRID = 512  # Simpson intervals of the conditional mean
_P0_MAX = 1.0 - 1e-9


def fit_no_return(log_survival_open: np.ndarray, n_returns: int) -> float:
    """Maximum-likelihood ``p0`` from the open gaps' ``log S(e)`` under the law of returns and the number
    of observed returns: ``n log(1 - p0) + Σ log(p0 + (1 - p0) S(e))`` is concave in ``p0``, so its
    derivative is bisected. 0 when no user is quiet for longer than the law expects."""
    s = np.exp(np.clip(np.asarray(log_survival_open, dtype=np.float64), -745.0, 0.0))
    if n_returns < 0:
        raise ValueError(f"n_returns must be >= 0, got {n_returns}")
    if s.size == 0:
        return 0.0

    def slope(p: float) -> float:
        with np.errstate(divide="ignore", over="ignore"):  # S(e) = 0 at p = 0: +inf, which is right
            return float(np.sum((1.0 - s) / (p + (1.0 - p) * s)) - n_returns / (1.0 - p))

    if slope(0.0) <= 0.0:
        return 0.0
    if slope(_P0_MAX) >= 0.0:
        return _P0_MAX
    lo, hi = 0.0, _P0_MAX
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0.0 else (lo, mid)
    return 0.5 * (lo + hi)


class ChurnLaw:
    """A batch of return-time laws (any object with ``log_survival(hours)``, ``mean_below``) with the
    no-return probability ``p0`` on top; all figures in float64 on the hours axis."""

    def __init__(self, law: object, p0: float = 0.0) -> None:
        if not 0.0 <= p0 < 1.0:
            raise ValueError(f"p0 must be in [0, 1), got {p0}")
        self.law, self.p0 = law, float(p0)

    def log_survival(self, hours: torch.Tensor) -> torch.Tensor:
        """``log S_tot(t)``."""
        log_s = self.law.log_survival(hours)
        if self.p0 == 0.0:
            return log_s
        return torch.logaddexp(torch.full_like(log_s, math.log(self.p0)), math.log1p(-self.p0) + log_s)

    def return_within(self, elapsed: torch.Tensor, horizon: float) -> torch.Tensor:
        """``P(return within horizon | no return during elapsed)``."""
        drop = self.log_survival(elapsed + horizon) - self.log_survival(elapsed)
        return (-torch.expm1(drop.clamp(max=0.0))).clamp(0.0, 1.0)

    def never(self, elapsed: torch.Tensor) -> torch.Tensor:
        """``P(never returns | no return during elapsed)`` (the law's mass beyond 1e12 h counts as never)."""
        return torch.exp(self.log_survival(torch.full_like(elapsed, 1e12)) - self.log_survival(elapsed)).clamp(0, 1)

    def mean_after(self, elapsed: torch.Tensor, cutoff_hours: float) -> torch.Tensor:
        """``E[T | elapsed < T <= C]`` in hours from the last session end: ``e + ∫_e^C (S(t) - S(C)) dt /
        (S(e) - S(C))`` (composite Simpson, 512 intervals, denser near ``e``); C when no mass is left in
        between (p0 cancels)."""
        e = elapsed.clamp(max=cutoff_hours)
        x = torch.linspace(0.0, 1.0, _GRID + 1, dtype=torch.float64)
        simpson = torch.ones_like(x)
        simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
        s_c = self.law.log_survival(torch.full_like(e, cutoff_hours)).exp()
        s_e = self.law.log_survival(e).exp()
        span = cutoff_hours - e
        area = torch.zeros_like(e)
        for xi, wi in zip(x.tolist(), simpson.tolist(), strict=True):
            s_t = self.law.log_survival(e + span * xi ** 3).exp()
            area += wi * (s_t - s_c) * 3 * xi ** 2
        area *= span / (3 * _GRID)
        within = s_e - s_c
        ok = within > 1e-12
        mean = e + area / torch.where(ok, within, torch.ones_like(within))
        return torch.where(ok, mean.clamp(max=cutoff_hours), torch.full_like(e, cutoff_hours))

    def median_after(self, elapsed: torch.Tensor, cutoff_hours: float) -> torch.Tensor:
        """Median gap (hours from the last session end) given no return during ``elapsed``, capped at the
        cut-off; bisection on ``ln t`` between the elapsed time and ``1e7`` hours."""
        target = self.log_survival(elapsed) + math.log(0.5)
        lo = torch.log(elapsed.clamp_min(1e-6))
        hi = torch.full_like(lo, math.log(1e7))
        reachable = self.log_survival(hi.exp()) < target
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            above = self.log_survival(mid.exp()) > target  # median not reached yet
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        median = (0.5 * (lo + hi)).exp()
        return torch.where(reachable, median.clamp(max=cutoff_hours), torch.full_like(median, cutoff_hours))
