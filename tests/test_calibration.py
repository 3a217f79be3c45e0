"""Calibration metrics on inputs small enough to work out by hand, and their place in the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib import image

from thrnn.calibration import (
    HORIZONS_HOURS,
    _panel_order,
    brier_score,
    expected_calibration_error,
    horizon_calibration,
    horizon_label,
    plot_reliability,
    quantile_coverage,
    reliability_bins,
    roc_auc,
)
from thrnn.metrics import DEFAULT_KS
from thrnn.report import RELIABILITY_PLOT, markdown_report, write_report

P = [0.1, 0.4, 0.8, 0.9]
Y = [0, 1, 1, 0]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_horizon_labels():
    assert [horizon_label(h) for h in HORIZONS_HOURS] == ["1d", "7d", "30d"]
    assert horizon_label(36) == "36h" and horizon_label(48) == "2d" and horizon_label(1.5) == "1.5h"


def test_brier_by_hand():
    # (0.01 + 0.36 + 0.04 + 0.81) / 4
    assert brier_score(P, Y) == pytest.approx(0.305)
    assert brier_score(np.array(P), np.array(Y, dtype=bool)) == pytest.approx(0.305)
    assert brier_score([1.0, 0.0], [1, 0]) == 0.0
    assert brier_score([], []) is None


def test_reliability_bins_two_bins():
    bins = reliability_bins(P, Y, n_bins=2)
    assert [(b["lower"], b["upper"], b["count"]) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert bins[0]["mean_p"] == pytest.approx(0.25) and bins[0]["observed"] == 0.5
    assert bins[1]["mean_p"] == pytest.approx(0.85) and bins[1]["observed"] == 0.5


def test_reliability_bin_edges():
    # 0.5 is the lower edge of the upper bin; 1.0 goes to the last bin; 0.0 to the first
    assert [b["count"] for b in reliability_bins([0.5], [1], n_bins=2)] == [0, 1]
    assert [b["count"] for b in reliability_bins([1.0, 0.0], [1, 0], n_bins=10)] == [1] + [0] * 8 + [1]
    # int(0.29 * 100) is 28, but 0.29 is the lower edge of bin 29
    assert reliability_bins([0.29], [0], n_bins=100)[29]["count"] == 1
    empty = reliability_bins([0.95], [1], n_bins=10)[3]
    assert empty == {"lower": 0.3, "upper": 0.4, "count": 0, "mean_p": None, "observed": None}
    assert all(b["count"] == 0 for b in reliability_bins([], [], n_bins=4))


def test_ece_by_hand():
    # 2 bins: 1/2 * |0.25 - 0.5| + 1/2 * |0.85 - 0.5| = 0.125 + 0.175
    assert expected_calibration_error(P, Y, n_bins=2) == pytest.approx(0.3)
    # 10 bins, one point each: (0.1 + 0.6 + 0.2 + 0.9) / 4
    assert expected_calibration_error(P, Y) == pytest.approx(0.45)
    # 10 bins: bin 0 {0.05: 0} -> 0.05; bin 1 {0.15: 1, 0.12: 0} -> |0.135 - 0.5| = 0.365;
    # bin 9 {0.95: 1, 1.0: 1} -> |0.975 - 1| = 0.025; weights 1/5, 2/5, 2/5
    p = [0.05, 0.15, 0.12, 0.95, 1.0]
    y = [0, 1, 0, 1, 1]
    assert expected_calibration_error(p, y) == pytest.approx(0.2 * 0.05 + 0.4 * 0.365 + 0.4 * 0.025)
    assert expected_calibration_error([], []) is None


def test_roc_auc_with_ties():
    # pairs (pos, neg): (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, 0.1) 1, (0.8, 0.4) 1 -> 3.5 / 4
    assert roc_auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([3.0, -1.0], [0, 1]) == 0.0  # any real score, not only probabilities
    assert roc_auc(P, Y) == pytest.approx(0.5)  # pos {0.4, 0.8} vs neg {0.1, 0.9}: 1 + 0 + 1 + 0
    assert roc_auc([0.2, 0.3], [1, 1]) is None
    assert roc_auc([], []) is None


def test_quantile_coverage_by_hand():
    true = np.array([1.0, 5.0, 10.0, 20.0])
    cov = quantile_coverage(true, {
        0.9: np.full(4, np.inf),                    # "never returns" as the upper quantile: covers all
        0.1: np.full(4, 2.0),                       # only 1 <= 2
        0.5: np.array([1.0, 6.0, 9.0, 20.0]),       # equality counts: 1, 5, 20 covered, 10 not
    })
    assert cov == {"coverage_q10": 0.25, "coverage_q50": 0.75, "coverage_q90": 1.0}
    assert list(cov) == ["coverage_q10", "coverage_q50", "coverage_q90"]
    odd = quantile_coverage([1.0, 2.0], {0.05: np.array([0.5, 2.0]), 0.025: np.array([0.0, 0.0]),
                                         0.07: np.array([9.0, 9.0])})
    assert odd == {"coverage_q2.5": 0.0, "coverage_q5": 0.5, "coverage_q7": 1.0}
    assert quantile_coverage([], {0.5: np.array([])}) == {"coverage_q50": None}


def test_horizon_calibration_keys_and_missing_horizon():
    p_by_h = {24.0: np.array(P), 168.0: np.array([0.2, 0.7]), 720.0: np.array([0.5])}
    y_by_h = {24.0: np.array(Y, dtype=bool), 168.0: np.array([0, 1])}
    cal = horizon_calibration(p_by_h, y_by_h)
    figures = {f"{k}_{lb}" for k in ("brier", "ece", "base_rate", "mean_p", "n") for lb in ("1d", "7d", "30d")}
    assert set(cal) == figures | {"reliability"}
    assert cal["brier_1d"] == pytest.approx(0.305) and cal["ece_1d"] == pytest.approx(0.45)
    assert cal["base_rate_1d"] == 0.5 and cal["mean_p_1d"] == pytest.approx(0.55) and cal["n_1d"] == 4
    # 7d: (0.04 + 0.09) / 2; bins 2 and 7: (0.2 + 0.3) / 2
    assert cal["brier_7d"] == pytest.approx(0.065) and cal["ece_7d"] == pytest.approx(0.25)
    assert cal["n_7d"] == 2 and isinstance(cal["n_7d"], int)
    # 30d has predictions but no labels
    assert [cal[f"{k}_30d"] for k in ("brier", "ece", "base_rate", "mean_p")] == [None] * 4
    assert cal["n_30d"] == 0
    assert list(cal["reliability"]) == ["1d", "7d", "30d"]
    assert [b["count"] for b in cal["reliability"]["30d"]] == [0] * 10
    assert sum(b["count"] for b in cal["reliability"]["1d"]) == 4
    json.dumps(cal, allow_nan=False)  # plain Python numbers and None: valid JSON as stored
    empty = horizon_calibration({36.0: np.array([])}, {36.0: np.array([])}, n_bins=2)
    assert empty["brier_36h"] is None and empty["n_36h"] == 0 and len(empty["reliability"]["36h"]) == 2


@pytest.mark.parametrize("call", [
    lambda: brier_score([0.1, 0.2], [1]),                   # shape mismatch
    lambda: brier_score([1.2], [1]),                        # above 1
    lambda: brier_score([-0.1], [0]),                       # below 0
    lambda: brier_score([math.nan], [0]),                   # not finite
    lambda: brier_score([0.5], [2]),                        # label not 0/1
    lambda: reliability_bins([0.5], [1], n_bins=0),
    lambda: expected_calibration_error([0.5, 0.5], [1]),
    lambda: roc_auc([0.1, math.inf], [0, 1]),
    lambda: roc_auc([0.1, 0.2], [0, 1, 1]),
    lambda: quantile_coverage([1.0, 2.0], {0.5: np.array([1.0])}),
    lambda: quantile_coverage([1.0], {0.5: np.array([math.nan])}),
    lambda: quantile_coverage([1.0], {1.5: np.array([1.0])}),
    lambda: horizon_calibration({24.0: np.array([0.5, 0.5])}, {24.0: np.array([1])}),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_plot_reliability_writes_png_atomically(tmp_path):
    cal = horizon_calibration({24.0: np.array(P), 36.0: np.array([0.3])}, {24.0: np.array(Y), 36.0: np.array([1])})
    out = plot_reliability({"a": cal["reliability"], "b": {"1d": reliability_bins([0.9], [1])}},
                           tmp_path / "r.png", title="t")
    assert out == tmp_path / "r.png" and out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # no temporary file left
    assert _panel_order(["36h", "30d", "2d", "1d"]) == ["1d", "30d", "36h", "2d"]
    assert plot_reliability({}, tmp_path / "none.png").read_bytes()[:8] == PNG_MAGIC


def _report_results():
    cal = horizon_calibration({24.0: np.array(P), 168.0: np.array([0.2, 0.7]), 720.0: np.array([0.5])},
                              {24.0: np.array(Y), 168.0: np.array([0, 1])})
    ranking = {f"{m}@{k}": 0.125 * i for i, k in enumerate(DEFAULT_KS, 1) for m in ("recall", "mrr")}
    thrnn = {**ranking, "nll_per_gap": 2.34567, "coverage_q10": 0.1, "coverage_q50": 0.5,
             "coverage_q90": 0.875, **cal}
    return {"thrnn": thrnn, "most_popular": {**ranking, "n_targets": 3}}


def test_report_with_distribution_table_and_reliability_plot(tmp_path):
    results = _report_results()
    paths = write_report(results, tmp_path / "rep")
    assert paths[RELIABILITY_PLOT] == tmp_path / "rep" / "reliability.png"
    assert paths[RELIABILITY_PLOT].read_bytes()[:8] == PNG_MAGIC
    img = image.imread(paths[RELIABILITY_PLOT])
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01
    assert json.loads(paths["metrics.json"].read_text()) == results
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(paths)
    lines = paths["report.md"].read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("## Return-time distribution"))
    assert lines[head + 2] == ("| model | NLL/gap (nats) | coverage q10 | coverage q50 | coverage q90 | Brier 1d "
                               "| ECE 1d | Brier 7d | ECE 7d | Brier 30d | ECE 30d |")
    # Brier 1d 0.305, ECE 1d 0.45, Brier 7d 0.065, ECE 7d 0.25 (worked out above); 30d has no labels
    assert lines[head + 4] == "| thrnn | 2.346 | 0.100 | 0.500 | 0.875 | 0.3050 | 0.4500 | 0.0650 | 0.2500 | – | – |"
    assert not any(line.startswith("| most_popular | –") for line in lines)  # no distribution row for it
    assert "![Reliability diagram](reliability.png)" in lines

    # without the new keys: no table, no plot, and a diagram from the earlier run is removed
    plain = {"most_popular": results["most_popular"]}
    paths = write_report(plain, tmp_path / "rep")
    assert RELIABILITY_PLOT not in paths and not (tmp_path / "rep" / RELIABILITY_PLOT).exists()
    md = paths["report.md"].read_text()
    assert "Return-time distribution" not in md and "reliability.png" not in md
    assert "| most_popular | 0.1250 | 0.2500 | 0.3750 | 0.1250 |" in md


def test_report_table_without_reliability_and_link_without_table():
    md = markdown_report({"m": {"coverage_q50": 0.5}})
    assert "| m | – | – | 0.500 | – | – | – | – | – | – | – |" in md and "reliability.png" not in md
    md = markdown_report({"m": {"reliability": {"1d": reliability_bins([0.5], [1])}}})
    assert "## Return-time distribution" in md and "![Reliability diagram](reliability.png)" in md
    assert "| model | NLL/gap" not in md


def test_ece_if_calibrated_is_the_noise_of_calibrated_predictions():
    from thrnn.calibration import ece_if_calibrated

    # certain predictions come true every time: no noise
    assert ece_if_calibrated(np.array([0.0, 1.0, 1.0])) == 0.0
    # one user at 0.5: whatever happens, the bin is off by 0.5
    assert ece_if_calibrated(np.array([0.5])) == pytest.approx(0.5)
    # many users: the noise shrinks, and the draws are seeded
    p = np.full(10_000, 0.3)
    assert ece_if_calibrated(p) < 0.01
    assert ece_if_calibrated(p) == ece_if_calibrated(p)
    assert ece_if_calibrated(np.zeros(0)) is None
