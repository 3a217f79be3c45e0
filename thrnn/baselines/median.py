"""Return-time baselines: the global and the per-user median of the training gaps (hours)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract import columns as C


def global_median_hours(train_gaps: pd.DataFrame) -> float:
    """Median of every real training gap (hours)."""
    if len(train_gaps) == 0:
        raise ValueError("no training gaps: every user has a single training session")
    return float(np.median(train_gaps["hours"].to_numpy()))


def user_median_predictions(train_gaps: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    """Per-user median of the user's training gaps for each entry of ``users``; global median when none."""
    fallback = global_median_hours(train_gaps)
    per_user = train_gaps.groupby(C.USER_ID)["hours"].median()
    return per_user.reindex(users).fillna(fallback).to_numpy(np.float64)
