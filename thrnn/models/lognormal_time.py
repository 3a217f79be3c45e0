"""Log-normal mixture model of the time until a user's next session (docs/model.md, "Return time").

The intensity-free point process of Shchur, Biloš & Günnemann (ICLR 2020): the log of the gap in
hours is a mixture of K Gaussians whose weights, means and scales a small network reads from the
inter-session state and from covariates known when the last session ended
(:func:`thrnn.time_features.time_covariates`). Unlike the RMTPP intensity it can put mass on
several modes at once (tonight, tomorrow night, next weekend), and every figure the pipeline
publishes is closed form or a bisection of a closed form:

- survival            ``S(t) = Σ_k π_k Φc((ln t - μ_k) / σ_k)``  (Φc = 1 - Φ)
- density (hours)     ``f(t) = Σ_k π_k φ((ln t - μ_k) / σ_k) / (σ_k t)``
- quantiles, median   bisection on ``ln t`` (S is monotone), 60 halvings of [1e-6, 1e7] h
- mean below a cut-off ``E[T 1{T <= C}] = Σ_k π_k e^{μ_k + σ_k²/2} Φ((ln C - μ_k - σ_k²) / σ_k)``

A :class:`LogNormalMixture` holds the parameters of a batch of gaps; the law is proper (no mass at
infinity): the chance of never returning is fitted separately, as of the scoring date, on the
users' open gaps (:func:`thrnn.scoring.fit_no_return`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
# sigma of each component in log-hours: below e^-4 a component is a spike narrower than 2 %
# of its median; above e^2.5 it spreads over more than the whole observable range
LOG_SIGMA_BOUNDS = (-4.0, 2.5)
_BISECT_LOW_HOURS, _BISECT_HIGH_HOURS, _BISECT_STEPS = 1e-6, 1e7, 60
_MIN_HOURS = 1e-9  # log of a zero gap (continuations are never targets, but keep it finite)


def _log_ndtr(x: torch.Tensor) -> torch.Tensor:
    return torch.special.log_ndtr(x)


@dataclass
class LogNormalMixture:
    """A batch of log-normal mixtures: ``log_weights``, ``means`` and ``log_scales`` of shape (B, K),
    in log-hours. Methods broadcast a (B,) or scalar time against the batch."""

    log_weights: torch.Tensor
    means: torch.Tensor
    log_scales: torch.Tensor

    def _z(self, hours: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(hours, dtype=self.means.dtype, device=self.means.device)
        log_t = torch.log(t.clamp_min(_MIN_HOURS))
        if log_t.dim() == 1:
            log_t = log_t[:, None]
        return (log_t - self.means) / self.log_scales.exp()

    def log_density(self, hours: torch.Tensor | float) -> torch.Tensor:
        """``log f(t)`` (B,) on the hours axis (nats): comparable across time models."""
        t = torch.as_tensor(hours, dtype=self.means.dtype, device=self.means.device).clamp_min(_MIN_HOURS)
        z = self._z(t)
        comp = self.log_weights - 0.5 * z * z - self.log_scales - _LOG_SQRT_2PI
        return torch.logsumexp(comp, dim=-1) - torch.log(t)

    def log_survival(self, hours: torch.Tensor | float) -> torch.Tensor:
        """``log S(t) = log P(T > t)`` (B,), accurate far into the tail (log Φc via log_ndtr(-z))."""
        return torch.logsumexp(self.log_weights + _log_ndtr(-self._z(hours)), dim=-1)

    def cdf(self, hours: torch.Tensor | float) -> torch.Tensor:
        """``P(T <= t)`` (B,)."""
        return (self.log_weights.exp() * torch.special.ndtr(self._z(hours))).sum(-1).clamp(0.0, 1.0)

    def quantile(self, q: float) -> torch.Tensor:
        """The ``q``-quantile in hours (B,) by bisection on ``ln t``."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile level must be in (0, 1), got {q}")
        shape = self.means.shape[:-1]
        lo = torch.full(shape, math.log(_BISECT_LOW_HOURS), dtype=self.means.dtype, device=self.means.device)
        hi = torch.full_like(lo, math.log(_BISECT_HIGH_HOURS))
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid.exp()) < q
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).exp()

    def median(self) -> torch.Tensor:
        return self.quantile(0.5)

    def mean_below(self, cutoff_hours: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[T | T <= C], P(T > C))`` (B,) in closed form; the mean is C when (almost) no mass is below C."""
        sigma = self.log_scales.exp()
        log_c = math.log(cutoff_hours)
        part = self.log_weights + self.means + 0.5 * sigma * sigma + _log_ndtr((log_c - self.means - sigma * sigma) / sigma)
        within = self.cdf(cutoff_hours)
        ok = within > 1e-12
        mean = torch.where(ok, torch.logsumexp(part, dim=-1).exp() / torch.where(ok, within, torch.ones_like(within)),
                           torch.full_like(within, cutoff_hours))
        return mean.clamp(0, cutoff_hours), 1 - within

    def no_return(self) -> torch.Tensor:
        """0 (B,): the law is proper; the no-return mass is fitted apart (module docstring)."""
        return torch.zeros_like(self.means[..., 0])

    def to(self, dtype: torch.dtype) -> LogNormalMixture:
        return LogNormalMixture(self.log_weights.to(dtype), self.means.to(dtype), self.log_scales.to(dtype))

    def __getitem__(self, index: object) -> LogNormalMixture:
        return LogNormalMixture(self.log_weights[index], self.means[index], self.log_scales[index])

    def stack(self) -> torch.Tensor:
        """(B, 3K) parameters: the layout :meth:`from_stacked` reads (for replay outputs)."""
        return torch.cat([self.log_weights, self.means, self.log_scales], dim=-1)

    @classmethod
    def from_stacked(cls, params: torch.Tensor) -> LogNormalMixture:
        k = params.shape[-1] // 3
        return cls(params[..., :k], params[..., k:2 * k], params[..., 2 * k:])


def censored_nll(law: LogNormalMixture, hours: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
    """Per-gap loss (B,): ``-log f(t)`` for observed gaps, ``-log S(t)`` for censored ones (the gap is
    known only to exceed ``t``: a gap above the model's bound, or an open gap)."""
    return torch.where(censored, -law.log_survival(hours), -law.log_density(hours))


class LogNormalMixtureHead(nn.Module):
    """Mixture parameters from ``[state, covariates]``: one tanh layer, then K weights, means, scales.
    With ``hidden_size`` 0 it reads the covariates only.

    ``center`` (the mean log-gap of the training data, a buffer) is added to every mean, so the
    network starts at the data's scale; the bias of the scales starts at the data's spread.
    """

    def __init__(self, hidden_size: int, n_covariates: int, n_components: int = 4, width: int = 64) -> None:
        super().__init__()
        if hidden_size < 0 or n_components < 1 or hidden_size + n_covariates < 1:
            raise ValueError(f"need inputs and n_components >= 1, got {hidden_size}, {n_covariates}, {n_components}")
        self.hidden_size = hidden_size
        self.n_components = n_components
        self.n_covariates = n_covariates
        self.layer = nn.Linear(hidden_size + n_covariates, width)
        self.out = nn.Linear(width, 3 * n_components)
        # the training gaps' mean and spread of ln t: the scale of the means and of the covariates
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("spread", torch.ones(()))
        # means spread over +-1 log-unit at the start so the components do not collapse onto one
        with torch.no_grad():
            self.out.bias[n_components:2 * n_components] = torch.linspace(-1.0, 1.0, n_components)

    def set_scale(self, center: float, spread: float) -> None:
        """Start at the training gaps' mean and spread of ``ln t`` (called once before training)."""
        with torch.no_grad():
            self.center.fill_(float(center))
            self.spread.fill_(float(spread))
            self.out.bias[2 * self.n_components:] = math.log(max(spread, 1e-3))

    def forward(self, h: torch.Tensor, covariates: torch.Tensor) -> LogNormalMixture:
        # hidden_size 0: the law reads the covariates only (h is ignored)
        x = torch.cat([h[..., :self.hidden_size], covariates.to(h.dtype)], dim=-1) if self.n_covariates else h
        o = self.out(torch.tanh(self.layer(x)))
        k = self.n_components
        return LogNormalMixture(
            torch.log_softmax(o[..., :k], dim=-1),
            o[..., k:2 * k] + self.center,
            o[..., 2 * k:].clamp(*LOG_SIGMA_BOUNDS),
        )
