"""Covariates of the return-time head and the shrunk per-user log-normal baseline, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thrnn.baselines.lognormal import shrunk_lognormal_predictions
from thrnn.data import load_sessions
from thrnn.evaluate import metrics_from_predictions
from thrnn.io import split_from_sessions
from thrnn.time_features import (
    COLUMNS,
    N_COVARIATES,
    PRIOR_GAPS,
    covariates_after,
    gap_scale,
    target_covariates,
)

H = 3600.0
B = 1_199_145_600.0  # 2008-01-01 00:00 UTC, hour 333096 since the epoch (120 mod 168)


def _split():
    sessions = {
        0: [[(1, B), (2, B + 60)], [(3, B + 10 * H), (1, B + 10 * H + 60)],
            [(2, B + 34 * H), (4, B + 34 * H + 120)]],
        1: [[(1, B + 5 * H), (2, B + 5 * H + 1800)], [(2, B + 7 * H), (3, B + 7 * H + 60)],
            [(4, B + 11 * H), (1, B + 11 * H + 60)], [(3, B + 30 * H), (2, B + 30 * H + 60)]],
    }
    return split_from_sessions(sessions)


def test_covariates_after_each_session_by_hand():
    data = load_sessions(_split())
    c, s = 2.0, 1.5
    cov = covariates_after(data, c, s, upper_hours=500.0).double()
    assert cov.shape == (7, N_COVARIATES)
    col = {name: i for i, name in enumerate(COLUMNS)}

    def at(row: int, name: str) -> float:
        return float(cov[row, col[name]])

    # row 0: user 0's first session ended at 00:01 on hour 120 + 1/60 of the week
    end_h = 333096 + 1 / 60
    assert at(0, "week_sin") == pytest.approx(math.sin(2 * math.pi * (120 + 1 / 60) / 168))
    assert at(0, "day_cos") == pytest.approx(math.cos(2 * math.pi * (end_h % 24) / 24))
    assert at(0, "half_day_sin") == pytest.approx(math.sin(2 * math.pi * (end_h % 12) / 12))
    assert at(0, "log_length") == pytest.approx(math.log(2))
    assert at(0, "log_duration") == pytest.approx(math.log1p(1 / 60))
    assert at(0, "continuation") == 0.0
    # no gap yet: the prior (mean 0, log spread 0 on the standardised scale), flagged
    assert (at(0, "gap_mean"), at(0, "gap_log_spread"), at(0, "last_gap"), at(0, "no_gap")) == (0, 0, 0, 1)
    assert at(0, "log_sessions") == pytest.approx(math.log(2))
    # started at hour 0, ended in hour 0: all of the share in rotated column 0 (x 4)
    assert at(0, "start_share_00") == pytest.approx(4.0)
    assert sum(at(0, f"start_share_{h:02d}") for h in range(24)) == pytest.approx(4.0)
    # row 1: one gap of 10 h - 1 min; shrunk mean z / 6, variance (5 + z^2 - z^2) / 6
    z = (math.log(10 - 1 / 60) - c) / s
    assert at(1, "gap_mean") == pytest.approx(z / (PRIOR_GAPS + 1))
    assert at(1, "gap_log_spread") == pytest.approx(0.5 * math.log(PRIOR_GAPS / (PRIOR_GAPS + 1)))
    assert (at(1, "last_gap"), at(1, "no_gap")) == (pytest.approx(z), 0.0)
    assert at(1, "last3_gap") == pytest.approx(z)
    # starts at hours 0 and 10, ended in hour 10: rotated columns 0 (hour 10) and 14 (hour 0)
    assert at(1, "start_share_00") == pytest.approx(2.0) and at(1, "start_share_14") == pytest.approx(2.0)
    # row 5: user 1 after three sessions with gaps 1.5 h and 4 h - 1 min
    z1, z2 = (math.log(1.5) - c) / s, (math.log(4 - 1 / 60) - c) / s
    own = (z1 + z2) / 2
    assert at(5, "gap_mean") == pytest.approx((z1 + z2) / (PRIOR_GAPS + 2))
    var = (PRIOR_GAPS + z1 ** 2 + z2 ** 2 - 2 * own ** 2) / (PRIOR_GAPS + 2)
    assert at(5, "gap_log_spread") == pytest.approx(0.5 * math.log(var))
    assert at(5, "last_gap") == pytest.approx(z2) and at(5, "last3_gap") == pytest.approx((z1 + z2) / 2)
    assert at(5, "log_sessions") == pytest.approx(math.log(4))
    # user 1's history never leaks into user 0's rows and vice versa
    assert at(3, "no_gap") == 1.0 and at(3, "gap_mean") == 0.0
    # the gap before session r is predicted from row r - 1 of the same user; first sessions get zeros
    tgt = target_covariates(cov, data)
    assert torch.equal(tgt[1], cov[0]) and torch.equal(tgt[2], cov[1]) and torch.equal(tgt[4], cov[3])
    assert not tgt[0].any() and not tgt[3].any()


def test_gap_scale_of_the_training_gaps():
    data = load_sessions(_split())
    lg = [math.log(10 - 1 / 60), math.log(1.5), math.log(4 - 1 / 60)]  # training gaps (2 + 3 train sessions)
    m, s = gap_scale(data, ~data.is_test, 500.0)
    assert m == pytest.approx(np.mean(lg)) and s == pytest.approx(np.std(lg))


def test_shrunk_lognormal_baseline_by_hand():
    split = _split()
    data = load_sessions(split)
    pred, users = shrunk_lognormal_predictions(split)
    assert users.tolist() == [0, 1]
    m0, s0 = gap_scale(data, ~data.is_test, 500.0)
    # user 0's test gap follows one gap (10 h - 1 min), user 1's two (1.5 h, 4 h - 1 min)
    for i, gaps in enumerate(([10 - 1 / 60], [1.5, 4 - 1 / 60])):
        lg = np.log(gaps)
        mu = (PRIOR_GAPS * m0 + lg.sum()) / (PRIOR_GAPS + len(lg))
        var = (PRIOR_GAPS * s0 ** 2 + ((lg - lg.mean()) ** 2).sum()) / (PRIOR_GAPS + len(lg))
        assert pred.gap_median_hours[i] == pytest.approx(math.exp(mu), rel=1e-9)
        assert pred.gap_quantiles[0.9][i] == pytest.approx(math.exp(mu + 1.2815515655446004 * math.sqrt(var)),
                                                           rel=1e-8)
        t = pred.gap_true_hours[i]
        z = (math.log(t) - mu) / math.sqrt(var)
        assert -pred.gap_log_density[i] == pytest.approx(math.log(t) + 0.5 * math.log(2 * math.pi * var) + z * z / 2)
        assert pred.gap_p_within[24.0][i] == pytest.approx(0.5 * math.erfc(-(math.log(24) - mu) / math.sqrt(2 * var)))
    assert pred.gap_true_hours.tolist() == pytest.approx([24 - 1 / 60, 19 - 1 / 60])
    m = metrics_from_predictions(pred)
    assert m["nll_per_gap"] == pytest.approx(-pred.gap_log_density.mean())
    assert m["n_1d"] == 2 and m["base_rate_1d"] == 1.0  # both gaps are under a day
    assert m["coverage_q90"] in (0.0, 0.5, 1.0)
