"""Point-process model of the time until a user's next session (docs/design.md §4.2, §4.4).

Units. The model works on its own time axis ``u = (gap_hours / time_unit_hours) ** gap_exponent``
(``to_model_time`` / ``from_model_time``); every function named ``*_hours`` takes and returns hours
on the original axis and does the back-transform itself.

Model (RMTPP form, Du et al. 2016). For one session with ``a = v·h + b`` and one global scalar
``w`` (unconstrained, may be negative):

- intensity          ``λ(u) = exp(a + w u)``
- cumulative         ``Λ(u) = e^a (e^{w u} - 1) / w``  (-> ``e^a u`` as w -> 0: exponential law)
- survival           ``S(u) = exp(-Λ(u))``
- density            ``f(u) = λ(u) S(u)``; negative log-likelihood ``-(a + w u) + Λ(u)``
- no-return mass     ``S(∞) = exp(e^a / w)`` when ``w < 0`` (defective law), else 0.

Because the back-transform ``t = unit · u^(1/ε)`` is monotone, survival and median carry over to the
hours axis unchanged (``S_T(t) = S(u(t))``), so horizon probabilities and the median are closed
form; only the mean needs a numeric integral.

The (a, w) functions broadcast like ordinary torch ops: ``a`` is typically (B,) and ``w`` a 0-dim
tensor. Training-side functions (``nll``, ``survival``...) keep the dtype of ``a`` and are
differentiable; prediction functions (``*_hours``) compute in float64 without gradients.
"""

from __future__ import annotations

import math

import torch
from torch import nn

Number = float | int
TensorLike = torch.Tensor | Number

# Below this |x| the helpers use a Taylor series: expm1(x)/x differentiated by autograd cancels
# badly in float32 near 0 (two terms ~1/x^2 minus each other), and is 0/0 at x = 0.
_SERIES_BELOW = 1e-2
# 512 intervals change the MAE by ~1e-5 relative to 8x finer grids (tests check < 1e-3).
DEFAULT_N_GRID = 512
# Rows per chunk in the numeric integral: bounds memory at ~chunk × n_grid float64 values.
_CHUNK_ROWS = 4096


def _as_tensor(x: TensorLike, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _expm1_over_x(x: torch.Tensor) -> torch.Tensor:
    """``(e^x - 1) / x`` with value 1 and finite gradients at x = 0."""
    small = x.abs() < _SERIES_BELOW
    x_safe = torch.where(small, torch.ones_like(x), x)
    series = 1 + x / 2 + x * x / 6 + x * x * x / 24
    return torch.where(small, series, torch.expm1(x_safe) / x_safe)


def _log1p_over_x(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + x) / x`` (x > -1) with value 1 at x = 0."""
    small = x.abs() < _SERIES_BELOW
    x_safe = torch.where(small, torch.ones_like(x), x)
    series = 1 - x / 2 + x * x / 3 - x * x * x / 4
    return torch.where(small, series, torch.log1p(x_safe) / x_safe)


# --------------------------------------------------------------------------------------------
# time axes


def to_model_time(hours: TensorLike, gap_exponent: float = 1.0, unit_hours: float = 1.0) -> torch.Tensor:
    """Gap in hours -> model axis ``u = (hours / unit_hours) ** gap_exponent``."""
    _check_axis(gap_exponent, unit_hours)
    h = torch.as_tensor(hours)
    if not h.is_floating_point():
        h = h.double()
    if bool((h < 0).any()):
        raise ValueError("gaps must be >= 0 hours")
    return (h / unit_hours) ** gap_exponent


def from_model_time(u: TensorLike, gap_exponent: float = 1.0, unit_hours: float = 1.0) -> torch.Tensor:
    """Model axis -> hours, the inverse of :func:`to_model_time`."""
    _check_axis(gap_exponent, unit_hours)
    u = torch.as_tensor(u)
    if not u.is_floating_point():
        u = u.double()
    return unit_hours * u.clamp_min(0) ** (1.0 / gap_exponent)


def _check_axis(gap_exponent: float, unit_hours: float) -> None:
    if not (gap_exponent > 0 and math.isfinite(gap_exponent)):
        raise ValueError(f"gap_exponent must be a positive number, got {gap_exponent}")
    if not (unit_hours > 0 and math.isfinite(unit_hours)):
        raise ValueError(f"unit_hours must be a positive number, got {unit_hours}")


# --------------------------------------------------------------------------------------------
# the law on the model axis (differentiable)


def cumulative_intensity(a: torch.Tensor, w: TensorLike, u: TensorLike) -> torch.Tensor:
    """``Λ(u) = e^a (e^{w u} - 1) / w``, written as ``e^a · u · expm1(w u)/(w u)`` (stable as w -> 0)."""
    w = _as_tensor(w, a)
    u = _as_tensor(u, a)
    return torch.exp(a) * u * _expm1_over_x(w * u)


def log_intensity(a: torch.Tensor, w: TensorLike, u: TensorLike) -> torch.Tensor:
    """``log λ(u) = a + w u``."""
    return a + _as_tensor(w, a) * _as_tensor(u, a)


def nll(a: torch.Tensor, w: TensorLike, u: TensorLike) -> torch.Tensor:
    """Negative log-likelihood of each gap ``u`` (model axis): ``-(a + w u) + Λ(u)``; shape of the broadcast.

    The Jacobian of the ``gap_exponent`` transform does not depend on the parameters, so it is left
    out (as in the research code); the loss is the NLL of the transformed gap.
    """
    return -log_intensity(a, w, u) + cumulative_intensity(a, w, u)


def density(a: torch.Tensor, w: TensorLike, u: TensorLike) -> torch.Tensor:
    """``f(u) = λ(u) S(u)`` on the model axis."""
    return torch.exp(-nll(a, w, u))


def survival(a: torch.Tensor, w: TensorLike, u: TensorLike) -> torch.Tensor:
    """``S(u) = P(U > u) = exp(-Λ(u))`` (includes the no-return mass when w < 0)."""
    return torch.exp(-cumulative_intensity(a, w, u))


def no_return_probability(a: torch.Tensor, w: TensorLike) -> torch.Tensor:
    """``P(never return) = exp(e^a / w)`` when ``w < 0`` (defective law), else 0."""
    w = _as_tensor(w, a)
    neg = w < 0
    w_safe = torch.where(neg, w, -torch.ones_like(w))
    return torch.where(neg, torch.exp(torch.exp(a) / w_safe), torch.zeros_like(a))


# --------------------------------------------------------------------------------------------
# predictions on the hours axis (float64, no gradients)


def _f64(a: torch.Tensor, w: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(a).detach().double()
    return a, torch.as_tensor(w, device=a.device).detach().double()


def _check_cutoff(cutoff_hours: float) -> None:
    if not (cutoff_hours > 0 and math.isfinite(cutoff_hours)):
        raise ValueError(f"cutoff_hours must be a positive number, got {cutoff_hours}")


@torch.no_grad()
def median_return_hours(
    a: torch.Tensor,
    w: TensorLike,
    *,
    gap_exponent: float = 1.0,
    unit_hours: float = 1.0,
    cutoff_hours: float = 600.0,
) -> torch.Tensor:
    """Median return time in hours (float64), capped at ``cutoff_hours``.

    Closed form from ``Λ(u) = log 2``: ``u = log(1 + w log2 e^{-a}) / w``; when the no-return mass is
    0.5 or more (``1 + w log2 e^{-a} <= 0``) there is no finite median and the cut-off is returned.
    """
    _check_axis(gap_exponent, unit_hours)
    _check_cutoff(cutoff_hours)
    a, w = _f64(a, w)
    c = math.log(2.0) * torch.exp(-a)  # the median of the exponential law (w = 0)
    x = w * c
    valid = x > -1
    u = c * _log1p_over_x(torch.where(valid, x, torch.zeros_like(x)))
    hours = from_model_time(u, gap_exponent, unit_hours)
    cutoff = torch.full_like(hours, float(cutoff_hours))
    return torch.where(valid & torch.isfinite(hours), torch.minimum(hours, cutoff), cutoff)


@torch.no_grad()
def expected_return_hours(
    a: torch.Tensor,
    w: TensorLike,
    *,
    gap_exponent: float = 1.0,
    unit_hours: float = 1.0,
    cutoff_hours: float = 600.0,
    n_grid: int = DEFAULT_N_GRID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[T | T <= C], P(T > C))`` in hours (float64), ``C = cutoff_hours`` on the original axis.

    ``E[T | T <= C] = ∫_0^C t f_T(t) dt / (1 - S(C))``; integrated by parts as
    ``∫_0^C (S(t) - S(C)) dt / (1 - S(C))`` — the same number, but the integrand is bounded even
    where the back-transformed density is not (``gap_exponent`` < 1 has an infinite density at 0).
    Substituting ``t = C x^3`` (dense near 0, where short gaps change fast) gives a smooth integrand
    on ``x`` in [0, 1], integrated by composite Simpson with ``n_grid`` (even) intervals. The
    second value is the mass beyond the cut-off, no-return mass included. When essentially no mass
    lies within the cut-off, the mean is the cut-off.
    """
    _check_axis(gap_exponent, unit_hours)
    _check_cutoff(cutoff_hours)
    if n_grid < 2 or n_grid % 2:
        raise ValueError(f"n_grid must be an even number >= 2, got {n_grid}")
    a, w = _f64(a, w)
    shape = torch.broadcast_shapes(a.shape, w.shape)
    a = a.expand(shape).reshape(-1)
    w = w.expand(shape).reshape(-1)
    x = torch.linspace(0.0, 1.0, n_grid + 1, dtype=torch.float64, device=a.device)
    grid = cutoff_hours * x**3
    u_grid = to_model_time(grid, gap_exponent, unit_hours)
    simpson = torch.ones_like(x)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    weights = simpson * (1.0 / (3 * n_grid)) * 3 * cutoff_hours * x**2  # Simpson weight × dt/dx
    means, tails = [], []
    for start in range(0, a.numel(), _CHUNK_ROWS):
        ac = a[start : start + _CHUNK_ROWS, None]
        wc = w[start : start + _CHUNK_ROWS, None]
        s = survival(ac, wc, u_grid)  # (chunk, n_grid + 1)
        s_c = s[:, -1:]
        within = 1 - s_c
        area = ((s - s_c) @ weights).unsqueeze(1)
        ok = within > 1e-12
        mean = torch.where(ok, area / torch.where(ok, within, torch.ones_like(within)), cutoff_hours)
        means.append(mean.clamp(0, cutoff_hours).squeeze(1))
        tails.append(s_c.squeeze(1))
    if not means:
        empty = torch.zeros(0, dtype=torch.float64, device=a.device)
        return empty.reshape(shape), empty.reshape(shape)
    return torch.cat(means).reshape(shape), torch.cat(tails).reshape(shape)


@torch.no_grad()
def return_probability(
    a: torch.Tensor,
    w: TensorLike,
    *,
    elapsed_hours: TensorLike,
    horizon_hours: TensorLike,
    gap_exponent: float = 1.0,
    unit_hours: float = 1.0,
) -> torch.Tensor:
    """``P(T <= e + h | T > e) = 1 - S(e + h) / S(e)`` in float64 (closed form, original time axis).

    ``e = elapsed_hours`` is the time already spent without returning (e.g. run date minus the
    last session end), ``h = horizon_hours``; both broadcast against ``a``.
    """
    a, w = _f64(a, w)
    e = torch.as_tensor(elapsed_hours, dtype=torch.float64, device=a.device)
    h = torch.as_tensor(horizon_hours, dtype=torch.float64, device=a.device)
    if bool((e < 0).any()) or bool((h < 0).any()):
        raise ValueError("elapsed_hours and horizon_hours must be >= 0")
    lam_e = cumulative_intensity(a, w, to_model_time(e, gap_exponent, unit_hours))
    lam_eh = cumulative_intensity(a, w, to_model_time(e + h, gap_exponent, unit_hours))
    # 1 - exp(-(Λ(e+h) - Λ(e))) without cancellation; Λ is increasing so the difference is >= 0.
    return (-torch.expm1(-(lam_eh - lam_e).clamp_min(0))).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# the head


class TimeHead(nn.Module):
    """``a = v·h + b`` per session plus the global, unconstrained ``w`` of the intensity."""

    def __init__(self, hidden_size: int, w_init: float = -0.1) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.linear = nn.Linear(hidden_size, 1)
        self.w = nn.Parameter(torch.tensor(float(w_init)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> ``a`` of shape (B,)."""
        return self.linear(h).squeeze(-1)

    def nll(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Per-gap negative log-likelihood (B,) of model-axis gaps ``u`` given states ``h``."""
        return nll(self(h), self.w, u)


# --------------------------------------------------------------------------------------------
# the law of a batch of gaps on the hours axis, with the interface of the log-normal mixture


class RmtppLaw:
    """RMTPP gaps of a batch (``a`` (B,), global ``w``) seen on the hours axis, with the methods of
    :class:`thrnn.models.lognormal_time.LogNormalMixture`, so evaluation and scoring treat both heads
    alike. The law may be defective (``w < 0``): quantiles beyond ``1 - P(never)`` are infinite."""

    def __init__(self, a: torch.Tensor, w: TensorLike, gap_exponent: float = 1.0, unit_hours: float = 1.0) -> None:
        _check_axis(gap_exponent, unit_hours)
        self.a = a
        self.w = _as_tensor(w, a)
        self.gap_exponent, self.unit_hours = gap_exponent, unit_hours

    def _u(self, hours: TensorLike) -> torch.Tensor:
        t = torch.as_tensor(hours, dtype=self.a.dtype, device=self.a.device).clamp_min(0)
        return (t / self.unit_hours) ** self.gap_exponent

    def log_survival(self, hours: TensorLike) -> torch.Tensor:
        return -cumulative_intensity(self.a, self.w, self._u(hours))

    def cdf(self, hours: TensorLike) -> torch.Tensor:
        return -torch.expm1(self.log_survival(hours))

    def log_density(self, hours: TensorLike) -> torch.Tensor:
        """``log f(t)`` on the hours axis: the model-axis density times ``du/dt``."""
        t = torch.as_tensor(hours, dtype=self.a.dtype, device=self.a.device).clamp_min(1e-9)
        eps = self.gap_exponent
        log_jac = math.log(eps / self.unit_hours) + (eps - 1) * torch.log(t / self.unit_hours)
        return -nll(self.a, self.w, self._u(t)) + log_jac

    def quantile(self, q: float) -> torch.Tensor:
        """Closed form from ``Λ(u) = -ln(1 - q)``; ``inf`` where the no-return mass exceeds ``1 - q``."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile level must be in (0, 1), got {q}")
        c = -math.log1p(-q) * torch.exp(-self.a)
        x = self.w * c
        ok = x > -1
        u = c * _log1p_over_x(torch.where(ok, x, torch.zeros_like(x)))
        hours = from_model_time(u, self.gap_exponent, self.unit_hours).to(self.a.dtype)
        return torch.where(ok, hours, torch.full_like(hours, math.inf))

    def median(self) -> torch.Tensor:
        return self.quantile(0.5)

    def mean_below(self, cutoff_hours: float) -> tuple[torch.Tensor, torch.Tensor]:
        return expected_return_hours(self.a, self.w, gap_exponent=self.gap_exponent, unit_hours=self.unit_hours,
                                     cutoff_hours=cutoff_hours)

    def no_return(self) -> torch.Tensor:
        return no_return_probability(self.a, self.w)

    def __getitem__(self, index: object) -> RmtppLaw:
        return RmtppLaw(self.a[index], self.w, self.gap_exponent, self.unit_hours)
