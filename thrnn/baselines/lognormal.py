"""Return-time baseline: a per-user log-normal of the gap, shrunk toward the global one.

For the gap before each test session, ``ln`` gap is normal with the user's mean and spread of the
``ln`` gaps seen so far (training gaps, then the earlier test gaps, as THRNN's history is), each
shrunk toward the training data's with :data:`thrnn.time_features.PRIOR_GAPS` pseudo-gaps:

``μ_u = (k m0 + Σ ln g) / (k + n)``, ``σ_u² = (k s0² + Σ (ln g - mean_u)²) / (k + n)`` (``mean_u`` the
user's unshrunk mean; gaps clipped at the model's bound). Its median ``e^{μ_u}`` is a per-user
geometric mean; as a full density it has an NLL, quantiles and horizon probabilities to compare
with the model's. The same numbers are covariates of the log-normal head (``gap_mean``,
``gap_log_spread`` in :mod:`thrnn.time_features`), so the head starts from what this baseline knows.
"""

from __future__ import annotations

import numpy as np
import torch

from thrnn.baselines.protocol import BaselinePredictions
from thrnn.data import SessionData, load_sessions
from thrnn.inference import gap_distribution
from thrnn.io import Split
from thrnn.models.lognormal_time import LogNormalMixture
from thrnn.time_features import COLUMNS, covariates_after, gap_scale, target_covariates

_MEAN, _SPREAD = COLUMNS.index("gap_mean"), COLUMNS.index("gap_log_spread")


def shrunk_lognormal_law(data: SessionData, rows: torch.Tensor, upper_hours: float = 500.0) -> LogNormalMixture:
    """The baseline's law (one component) of the gap before each session of the bool mask ``rows``."""
    center, spread = gap_scale(data, ~data.is_test, upper_hours)
    cov = target_covariates(covariates_after(data, center, spread, upper_hours, torch.float64), data)[rows]
    mu = center + spread * cov[:, _MEAN]
    log_sigma = np.log(spread) + cov[:, _SPREAD]
    return LogNormalMixture(torch.zeros_like(mu)[:, None], mu[:, None], log_sigma[:, None])


def shrunk_lognormal_predictions(split: Split | SessionData, upper_hours: float = 500.0,
                                 cutoff_hours: float = 600.0) -> tuple[BaselinePredictions, np.ndarray]:
    """Predictions for every test gap of the protocol (median, mean within the cut-off, the law's
    NLL / quantiles / horizon probabilities) and the user of each gap, in (user, session) order."""
    data = split if isinstance(split, SessionData) else load_sessions(split)
    rows = data.is_test & data.time_mask
    law = shrunk_lognormal_law(data, rows, upper_hours)
    true = data.gap_hours[rows].numpy()
    mean, _ = law.mean_below(cutoff_hours)
    pred = BaselinePredictions(
        None, None, true,
        gap_median_hours=law.median().clamp(max=cutoff_hours).numpy(),
        gap_mean_hours=mean.numpy(),
        gap_no_return_prob=np.zeros(len(true)),
        **gap_distribution(law, true),
    )
    return pred, data.users[rows].numpy()
