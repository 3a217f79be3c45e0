"""Models: THRNN, HRNN and the GRU4Rec-style session GRU are one class with flags (``hier_gru``)."""

from __future__ import annotations

from thrnn.config import TrainConfig
from thrnn.models.hier_gru import HierarchicalGRU
from thrnn.time_features import N_COVARIATES


def build_model(cfg: TrainConfig, n_items: int, n_users: int) -> HierarchicalGRU:
    """The model ``cfg.model`` names, sized for item ids 1..n_items and user ids 0..n_users-1."""
    return HierarchicalGRU(
        n_items=n_items,
        n_users=n_users,
        hidden=cfg.item_embedding,
        user_embedding=cfg.user_embedding,
        gap_embedding=cfg.gap_embedding,
        n_gap_buckets=cfg.n_gap_buckets,
        dropout=cfg.dropout,
        inter=cfg.has_inter,
        context=cfg.has_context,
        temporal=cfg.has_time,
        w_init=cfg.w_init,
        tie_embeddings=cfg.tie_embeddings,
        mixture=cfg.mixture,
        time_head=cfg.time_head,
        time_components=cfg.time_components,
        n_time_covariates=N_COVARIATES,
        time_state=cfg.time_state,
        gap_exponent=cfg.gap_exponent,
        time_unit_hours=cfg.time_unit_hours,
    )


__all__ = ["HierarchicalGRU", "build_model"]
