"""Report files: JSON round trip, markdown table content, real PNG files, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib import image

from thrnn.evaluate import metrics_from_predictions
from thrnn.report import markdown_report, write_report


class _P:
    def __init__(self, ranks, first, true, median, mean):
        self.next_item_ranks, self.first_item_ranks = ranks, first
        self.gap_true_hours, self.gap_median_hours, self.gap_mean_hours = true, median, mean
        self.gap_no_return_prob = None


def _results():
    true = np.array([1.0, 10.0, 40.0, 600.0])
    thrnn = metrics_from_predictions(_P(np.array([1, 2, 30]), np.array([1]), true, true + 1, true + 2))
    pop = metrics_from_predictions(_P(np.array([7, 50, 30]), None, true, None, None))
    med = metrics_from_predictions(_P(None, None, true, np.full(4, 20.0), None))
    return {"thrnn": thrnn, "most_popular": pop, "median_global": med}


def test_write_report_files(tmp_path):
    results = _results()
    paths = write_report(results, tmp_path / "rep", title="Tiny")
    assert set(paths) == {"metrics.json", "report.md", "recall_at_k.png", "mrr_at_k.png", "mae_by_gap_bucket.png"}
    assert json.loads(paths["metrics.json"].read_text()) == results
    for name in ("recall_at_k.png", "mrr_at_k.png", "mae_by_gap_bucket.png"):
        img = image.imread(paths[name])
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 0.01  # something was drawn
    # no staging leftovers; a re-run replaces the files
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(paths)
    results["thrnn"]["recall@20"] = 0.5
    write_report(results, tmp_path / "rep")
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["thrnn"]["recall@20"] == 0.5


def test_markdown_content_worked_by_hand():
    md = markdown_report(_results(), title="Tiny")
    lines = md.splitlines()
    assert lines[0] == "# Tiny"
    # thrnn: ranks 1, 2, 30 -> R@5 = 2/3, MRR@5 = (1 + 1/2)/3 = 0.5; first item rank 1
    row = next(line for line in lines if line.startswith("| thrnn | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0.6667" and cells[4] == "0.5000" and cells[7] == "1.0000" and cells[9] == "3"
    row = next(line for line in lines if line.startswith("| most_popular | "))
    assert [c.strip() for c in row.strip("|").split("|")][7] == "–"
    # return time: thrnn errors 1, 1, 1, 0 (600 and 601 both capped to 500) -> 0.75
    time_rows = [line for line in lines if line.startswith("| thrnn | 0.75")]
    assert len(time_rows) == 1
    assert not any(line.startswith("| most_popular | –") for line in lines)  # no time row for it
    # median_global at 20 h: errors 19, 10, 20, 480 -> 132.25
    assert any(line.startswith("| median_global | 132.25") for line in lines)


def test_mean_and_std_are_shown_and_errors():
    md = markdown_report({"m": {"recall@20": 0.61234, "recall@20_std": 0.01, "n_targets": 14003}})
    assert "0.6123 ± 0.0100" in md and "14,003" in md
    with pytest.raises(ValueError):
        write_report({}, "unused")
