"""Recalibration on anchors before the night: Platt fit, anchor examples, maps and their use in scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thrnn import recalibration as R
from thrnn.churn import ChurnLaw, fit_no_return

H = 3_600_000_000  # microseconds per hour


class _Exponential:
    """A law with ``S(t) = exp(-t / scale)`` per row."""

    def __init__(self, scale: np.ndarray) -> None:
        self.scale = torch.as_tensor(scale, dtype=torch.float64)

    def log_survival(self, hours: torch.Tensor) -> torch.Tensor:
        return -hours / self.scale


def test_platt_on_one_level_is_the_observed_log_odds():
    # every p is 0.5 (logit 0): only a moves, to logit(3/4) = ln 3; b has no gradient and stays at 1
    a, b = R.fit_platt(np.full(4, 0.5), np.array([1.0, 1.0, 1.0, 0.0]), ridge=0.0)
    assert a == pytest.approx(math.log(3.0), abs=1e-6) and b == pytest.approx(1.0, abs=1e-9)


def test_platt_on_two_levels_hits_both_frequencies():
    # p = 0.2 (logit -ln 4) came true 5 of 10 times, p = 0.8 (logit ln 4) 8 of 10 times:
    # a - b ln 4 = 0 and a + b ln 4 = ln 4, so a = ln 4 / 2 and b = 1/2
    p = np.r_[np.full(10, 0.2), np.full(10, 0.8)]
    y = np.r_[np.ones(5), np.zeros(5), np.ones(8), np.zeros(2)]
    a, b = R.fit_platt(p, y, ridge=0.0)
    assert a == pytest.approx(math.log(4.0) / 2, abs=1e-5) and b == pytest.approx(0.5, abs=1e-5)
    # the ridge pulls toward the identity (0, 1)
    a2, b2 = R.fit_platt(p, y, ridge=0.1)
    assert abs(a2) < abs(a) and 0.5 < b2 < 1.0


def test_platt_refuses_bad_labels():
    with pytest.raises(ValueError, match="0 or 1"):
        R.fit_platt(np.array([0.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="same length"):
        R.fit_platt(np.array([0.5, 0.5]), np.array([1.0]))


def _times() -> R.SessionTimes:
    # hours: user 0 sessions [0,1], [4,5] (a return), [29,30] (a return); user 1 [1,2], then [100,101];
    # user 2 [9,11] (inside a session at T = 10); user 3 starts at 50 (nothing ended by T)
    rows = [(0, 0, 1, False), (0, 4, 5, True), (0, 29, 30, True), (1, 1, 2, False), (1, 100, 101, True),
            (2, 9, 11, False), (3, 50, 51, False)]
    u, s, e, r = zip(*rows, strict=True)
    return R.SessionTimes(np.array(u), np.array(s) * H, np.array(e) * H, np.array(r))


def test_anchor_examples_see_only_what_had_ended_by_the_anchor():
    times = _times()
    seen: list[np.ndarray] = []

    def law_of_rows(rows: np.ndarray) -> _Exponential:
        seen.append(rows)
        return _Exponential(np.full(rows.size, 10.0))

    p, y = R.anchor_examples(times, law_of_rows, 10 * H, 24.0)
    # user 0 from row 1 (ended at 5 h, next start 29 h <= 34 h), user 1 from row 3 (next start 100 h)
    np.testing.assert_array_equal(seen[0], [1, 3])
    np.testing.assert_array_equal(y, [1.0, 0.0])
    law = _Exponential(np.full(2, 10.0))
    e = torch.tensor([5.0, 8.0], dtype=torch.float64)
    p0 = fit_no_return(law.log_survival(e).numpy(), 1)  # one return (row 1) had started by T
    assert 0 < p0 < 1
    np.testing.assert_allclose(p, ChurnLaw(law, p0).return_within(e, 24.0).numpy(), rtol=1e-12)
    # a horizon of 10 h: user 0's return at 29 h is too late
    _, y10 = R.anchor_examples(times, law_of_rows, 10 * H, 10.0)
    np.testing.assert_array_equal(y10, [0.0, 0.0])
    # before anything ended: no examples
    p_none, y_none = R.anchor_examples(times, law_of_rows, 0, 24.0)
    assert p_none.size == y_none.size == 0


def test_maps_apply_per_horizon_and_keep_horizons_ordered():
    rec = R.Recalibration([R.HorizonMap(24.0, math.log(3.0), 1.0, 100, 4), R.HorizonMap(168.0, 0.0, 1.0, 10, 1)])
    out = rec.apply({24.0: np.array([0.5, 0.1]), 168.0: np.array([0.6, 0.9])})
    # 1 d: logit 0 + ln 3 -> 0.75; logit(0.1) + ln 3 = ln(1/3) -> 0.25
    np.testing.assert_allclose(out[24.0], [0.75, 0.25], rtol=1e-9)
    # 7 d is the identity, lifted to 1 d's figure where it fell below it
    np.testing.assert_allclose(out[168.0], [0.75, 0.9], rtol=1e-9)
    assert rec.to_dict()["24h"]["examples"] == 100


def test_fit_recalibration_keeps_the_law_with_too_few_examples(caplog):
    times = _times()

    def law_of_rows(rows: np.ndarray) -> _Exponential:
        return _Exponential(np.full(rows.size, 10.0))

    caplog.set_level("INFO", logger="thrnn.recalibration")
    rec = R.fit_recalibration(times, law_of_rows, 34 * H, [24.0, 720.0], step_hours=2.0)
    # 24 h: anchors at 10, 8 and 6 h (users 0 and 1 each) and 4 h (user 1: user 0 is inside a session)
    m24 = rec.maps[24.0]
    assert m24.identity and m24.anchors == 4 and m24.examples == 7
    # 720 h: the anchor would fall before the first session ended
    assert rec.maps[720.0].anchors == 0 and rec.maps[720.0].identity
    assert "the law's figures are kept" in caplog.text
    # with a low bar the 24 h map is fitted (a law that ranks the returning user 0 first: b > 0)
    def ranking_law(rows: np.ndarray) -> _Exponential:
        return _Exponential(np.where(times.users[rows] == 0, 5.0, 50.0))

    fitted = R.fit_recalibration(times, ranking_law, 34 * H, [24.0], step_hours=2.0, min_examples=4)
    assert fitted.maps[24.0].examples == 7 and not fitted.maps[24.0].identity
