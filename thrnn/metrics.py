"""Evaluation metrics shared by every model and baseline (docs/design.md §5).

Ranking: full ranking over the catalogue (item ids 1..N, padding id 0 never a candidate), ties
counted against the model: ``rank = 1 + #items scoring higher + #other items scoring equal``.
Return time: MAE in hours with targets and predictions capped at 500 h, overall and per gap bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
# Upper bounds (hours) of the gap buckets of the paper's figures. A gap g goes to the first bucket
# with g <= upper; gaps are capped at 500 h first, so every gap has a bucket.
GAP_BUCKET_UPPER_HOURS: tuple[float, ...] = (
    2, 12, 36, 60, 84, 108, 132, 156, 180, 204, 228, 252, 276, 300, 348, 396, 444, 500,
)
GAP_CAP_HOURS = 500.0


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among items 1..N of ``scores`` (B, N+1); ties against the model.

    Column 0 (padding) is never a candidate. Targets must be real item ids (>= 1).
    """
    if scores.dim() != 2 or targets.dim() != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores (B, N+1) and targets (B,) expected, got {tuple(scores.shape)}, "
                         f"{tuple(targets.shape)}")
    if targets.numel() and int(targets.min()) < 1:
        raise ValueError("targets must be item ids >= 1 (0 is padding)")
    candidates = scores[:, 1:]
    target_scores = scores.gather(1, targets.long().unsqueeze(1))
    higher = (candidates > target_scores).sum(1)
    equal_others = (candidates == target_scores).sum(1) - 1
    return (1 + higher + equal_others).long()


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, column indices), both (B, min(k, C)), of the ``k`` largest of each row of ``scores`` (B, C),
    best first; equal scores in column order (the lower item id first), so the published lists do
    not depend on how ``torch.topk`` orders ties.

    Rows whose k-th and (k+1)-th values differ are settled by ``torch.topk`` (k+1) and a sort of those
    k; only rows with a tie across the cut-off are sorted whole.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if n_rows == 0 or k == 0:
        return scores.new_zeros(n_rows, k), torch.zeros(n_rows, k, dtype=torch.long, device=scores.device)
    if k == n_cols:
        values, columns = torch.sort(scores, dim=1, descending=True, stable=True)
        return values, columns
    values, columns = torch.topk(scores, k + 1, dim=1)
    tied = values[:, k] == values[:, k - 1]
    values, columns = values[:, :k], columns[:, :k]
    # within the k: column order first, then a stable sort by value keeps it among equal values
    by_col = torch.sort(columns, dim=1).indices
    values, columns = values.gather(1, by_col), columns.gather(1, by_col)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    values, columns = values.gather(1, order), columns.gather(1, order)
    if bool(tied.any()):
        rows = torch.nonzero(tied).squeeze(1)
        v, c = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], columns[rows] = v[:, :k], c[:, :k]
    return values, columns


@dataclass
class RankingAccumulator:
    """Micro-averaged Recall@k and MRR@k over all targets added so far."""

    ks: Sequence[int] = DEFAULT_KS
    _ranks: list[np.ndarray] = field(default_factory=list)

    def add(self, ranks: torch.Tensor | np.ndarray | Iterable[int]) -> None:
        if isinstance(ranks, torch.Tensor):
            ranks = ranks.detach().cpu().numpy()
        self._ranks.append(np.asarray(ranks, dtype=np.int64).ravel())

    @property
    def ranks(self) -> np.ndarray:
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    def result(self, prefix: str = "") -> dict[str, float]:
        return ranking_metrics(self.ranks, self.ks, prefix)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> dict[str, float]:
    """``{prefix}recall@k``, ``{prefix}mrr@k`` for each k, and ``{prefix}n_targets``."""
    ranks = np.asarray(ranks, dtype=np.int64)
    n = len(ranks)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"{prefix}recall@{k}"] = float(hit.mean()) if n else 0.0
        out[f"{prefix}mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if n else 0.0
    out[f"{prefix}n_targets"] = n
    return out


def gap_bucket_index(hours: np.ndarray, uppers: Sequence[float] = GAP_BUCKET_UPPER_HOURS) -> np.ndarray:
    """Index of the first bucket with ``hours <= upper`` (hours capped at the last upper bound)."""
    capped = np.minimum(np.asarray(hours, dtype=np.float64), uppers[-1])
    return np.searchsorted(np.asarray(uppers, dtype=np.float64), capped, side="left")


def return_time_mae(
    true_hours: np.ndarray,
    pred_hours: np.ndarray,
    uppers: Sequence[float] = GAP_BUCKET_UPPER_HOURS,
    cap_hours: float = GAP_CAP_HOURS,
) -> dict[str, object]:
    """MAE in hours, overall and per bucket of the true gap, both sides capped at ``cap_hours``.

    Returns ``{"mae_hours", "n_gaps", "mae_hours_by_bucket": [{upper_hours, count, share, mae_hours}]}``;
    a bucket with no gaps has ``mae_hours`` None.
    """
    t = np.minimum(np.asarray(true_hours, dtype=np.float64), cap_hours)
    p = np.minimum(np.asarray(pred_hours, dtype=np.float64), cap_hours)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch {t.shape} vs {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("non-finite return-time predictions")
    err = np.abs(t - p)
    idx = gap_bucket_index(t, uppers)
    n = len(t)
    buckets = []
    for b, upper in enumerate(uppers):
        sel = idx == b
        c = int(sel.sum())
        buckets.append(
            {
                "upper_hours": float(upper),
                "count": c,
                "share": c / n if n else 0.0,
                "mae_hours": float(err[sel].mean()) if c else None,
            }
        )
    return {"mae_hours": float(err.mean()) if n else float("nan"), "n_gaps": n, "mae_hours_by_bucket": buckets}
