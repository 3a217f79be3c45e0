"""Repeat-aware output mixture (docs/model.md): ``P(i) = π_0 softmax(i) + Σ_k π_k P_k(i)``.

``P_k`` are the personal-history components of :mod:`thrnn.personal` (global transitions, the
user's own transitions, the user's decayed item frequency); the weights ``π`` come from a gate on the
model's state, softmax-normalised over the components that have mass for the target (RepeatNet's
repeat/explore idea with several repeat modes). The gate starts from fixed weights close to the
personal-history heuristic (zero input weights, bias = log of :data:`NEXT_INIT` / :data:`FIRST_INIT`),
so training starts near the heuristic and improves on it.

Training minimises ``-log(Σ_k π_k P_k(target) + floor)`` computed with log-sum-exp.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from thrnn.personal import COMPONENTS

# Initial mixture weights: (neural, global, cooc, cooc_any, user, user2, decay, recent).
NEXT_INIT: tuple[float, ...] = (0.1, 0.2, 0.1, 0.05, 0.2, 0.1, 0.2, 0.05)
FIRST_INIT: tuple[float, ...] = (0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.6, 0.05)
LOG_FLOOR = math.log(1e-8)


class MixtureGate(nn.Module):
    """Gate ``(state (T, H), mass (T, K)) -> log π (T, 1 + K)`` over (neural, components...).

    Besides the state it reads ``log(1 + mass)`` of each component (how many transitions from the
    current item were seen, how much decayed history there is): how far to trust each estimate."""

    def __init__(self, hidden: int, init: tuple[float, ...]) -> None:
        super().__init__()
        if len(init) != 1 + len(COMPONENTS):
            raise ValueError(f"need {1 + len(COMPONENTS)} initial weights, got {len(init)}")
        self.proj = nn.Linear(hidden + len(COMPONENTS), len(init))
        with torch.no_grad():
            self.proj.weight.zero_()
            w = torch.tensor(init, dtype=torch.float32)
            self.proj.bias.copy_(torch.log(w / w.sum()))

    def forward(self, state: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
        """Masked log-softmax: components without mass get weight 0; the neural softmax always has some."""
        logits = self.proj(torch.cat([state, torch.log1p(mass.to(state.dtype))], dim=1)).float()
        available = mass > 0
        mask = torch.cat([torch.ones_like(available[:, :1]), available], dim=1)
        return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)


def mixture_log_prob(log_pi: torch.Tensor, neural_log_p: torch.Tensor, component_p: torch.Tensor) -> torch.Tensor:
    """``log(Σ_k π_k P_k(target) + floor)`` (T,) from log π (T, 1+K), the neural log-probability of the
    target (T,) and the components' probabilities of the target (T, K)."""
    log_comp = torch.log(component_p.float().clamp(min=0.0))  # log 0 = -inf: no mass there
    terms = torch.cat([neural_log_p[:, None].float(), log_comp], dim=1) + log_pi
    floor = terms.new_full((terms.shape[0], 1), LOG_FLOOR)
    return torch.logsumexp(torch.cat([terms, floor], dim=1), dim=1)


def mixture_probs(log_pi: torch.Tensor, neural_logits: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Dense mixture probabilities (T, N+1) over item ids 0..N (column 0 = padding, 0) from log π
    (T, 1+K), the neural logits over items 1..N (T, N) and the dense components (T, K, N+1)."""
    pi = log_pi.float().exp()
    probs = torch.zeros(components.shape[0], components.shape[2], dtype=torch.float32, device=components.device)
    probs[:, 1:] = torch.softmax(neural_logits.float(), dim=1) * pi[:, :1]
    probs += torch.einsum("tk,tkn->tn", pi[:, 1:], components.float())
    probs[:, 0] = 0.0
    return probs
