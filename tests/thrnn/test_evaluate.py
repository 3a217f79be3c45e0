"""Evaluation protocol: metrics worked out by hand, ties, bad input, and a real trained run end to end."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from thrnn import evaluate as ev
from thrnn.metrics import GAP_BUCKET_UPPER_HOURS, ranks_from_scores

torch.set_num_threads(1)


@dataclass
class Preds:
    """Synthetic stand-in for thrnn.inference.TestPredictions (same field names)."""

    next_item_ranks: np.ndarray | None
    first_item_ranks: np.ndarray | None
    gap_true_hours: np.ndarray
    gap_median_hours: np.ndarray | None
    gap_mean_hours: np.ndarray | None
    gap_no_return_prob: np.ndarray | None


def test_ranking_metrics_by_hand_with_ties_against_the_model():
    # 3 items (+ padding column 0, which scores highest and must never count)
    scores = torch.tensor(
        [
            [9.0, 0.5, 0.5, 0.2],  # target 1 ties with item 2 -> rank 2
            [9.0, 0.1, 0.7, 0.7],  # target 3 ties with 2 -> rank 2
            [9.0, 0.3, 0.2, 0.1],  # target 1 best -> rank 1
            [9.0, 0.4, 0.4, 0.4],  # target 2, all equal -> rank 3 (worst)
        ]
    )
    ranks = ranks_from_scores(scores, torch.tensor([1, 3, 1, 2])).numpy()
    np.testing.assert_array_equal(ranks, [2, 2, 1, 3])
    m = ev.metrics_from_predictions(Preds(ranks, None, np.zeros(0), None, None, None), ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@2"] == pytest.approx(3 / 4)
    assert m["mrr@1"] == pytest.approx(1 / 4)
    assert m["mrr@2"] == pytest.approx((0.5 + 0.5 + 1) / 4)
    assert m["n_targets"] == 4


def test_flat_metrics_worked_by_hand():
    ranks = np.array([1, 3, 6, 12, 25])
    first = np.array([2, 40])
    true = np.array([1.0, 10.0, 600.0, 50.0])
    median = np.array([3.0, 10.0, 700.0, 0.0])  # capped at 500 -> errors 2, 0, 0, 50
    mean = np.array([1.0, 20.0, 100.0, 50.0])  # errors 0, 10, 400, 0
    m = ev.metrics_from_predictions(Preds(ranks, first, true, median, mean, np.array([0.1, 0.3, 0.2, 0.0])))
    assert m["recall@5"] == pytest.approx(2 / 5)
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["recall@20"] == pytest.approx(4 / 5)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 5)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 1 / 12) / 5)
    assert m["first_item_recall@20"] == pytest.approx(0.5)
    assert m["first_item_mrr@20"] == pytest.approx(0.25)
    assert m["first_item_n_targets"] == 2
    assert m["n_targets"] == 5 and m["n_gaps"] == 4
    assert m["mae_hours"] == pytest.approx(13.0)
    assert m["mae_hours_mean"] == pytest.approx(102.5)
    assert m["mean_no_return_prob"] == pytest.approx(0.15)
    buckets = {b["upper_hours"]: b for b in m["mae_hours_by_bucket"]}
    assert [b["upper_hours"] for b in m["mae_hours_by_bucket"]] == [float(u) for u in GAP_BUCKET_UPPER_HOURS]
    assert (buckets[2.0]["count"], buckets[2.0]["mae_hours"]) == (1, 2.0)
    assert (buckets[12.0]["count"], buckets[12.0]["mae_hours"]) == (1, 0.0)
    assert (buckets[60.0]["count"], buckets[60.0]["mae_hours"], buckets[60.0]["share"]) == (1, 50.0, 0.25)
    assert (buckets[500.0]["count"], buckets[500.0]["mae_hours"]) == (1, 0.0)
    assert buckets[36.0]["count"] == 0 and buckets[36.0]["mae_hours"] is None
    assert sum(b["count"] for b in m["mae_hours_by_bucket"]) == 4
    json.dumps(m, allow_nan=False)  # the CLI writes strict JSON


def test_models_without_heads_give_none_but_bucket_counts():
    m = ev.metrics_from_predictions(Preds(np.array([1, 2]), None, np.array([1.0, 30.0]), None, None, None))
    assert m["first_item_recall@20"] is None and m["first_item_n_targets"] == 0
    assert m["mae_hours"] is None and m["mae_hours_mean"] is None and m["mean_no_return_prob"] is None
    assert [b["count"] for b in m["mae_hours_by_bucket"] if b["count"]] == [1, 1]
    assert all(b["mae_hours"] is None for b in m["mae_hours_by_bucket"])


@pytest.mark.parametrize(
    ("preds", "match"),
    [
        (Preds(np.array([0, 1]), None, np.zeros(0), None, None, None), "ranks must be >= 1"),
        (Preds(np.array([1]), None, np.array([1.0, 2.0]), np.array([1.0]), None, None), "1 return-time predictions"),
        (Preds(np.array([1]), None, np.array([1.0]), np.array([-1.0]), None, None), "negative"),
        (Preds(np.array([1]), None, np.array([np.nan]), None, None, None), "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(preds, match):
    with pytest.raises(ValueError, match=match):
        ev.metrics_from_predictions(preds)


def _tiny_split(tmp_path):
    from thrnn.io import split_from_sessions

    rng = np.random.default_rng(0)
    sessions = {}
    for user in range(6):
        t = 1_700_000_000.0 + user * 1000
        user_sessions = []
        for _ in range(6):
            n = int(rng.integers(2, 6))
            items = rng.integers(1, 9, size=n)
            user_sessions.append([(int(i), t + 60 * k) for k, i in enumerate(items)])
            t += 60 * n + float(rng.uniform(1, 100)) * 3600
        sessions[user] = user_sessions
    # user 0's session 5 is chunk 2 of session 4: a continuation (gap 0, not a time target)
    return split_from_sessions(sessions, tmp_path / "data", continuations={0: {5}})


def test_evaluate_run_cli_on_a_trained_thrnn(tmp_path):
    train_mod = pytest.importorskip("thrnn.train")
    from thrnn.checkpoint import load_run
    from thrnn.config import config_for
    from thrnn.inference import predict_test

    split = _tiny_split(tmp_path)
    cfg = config_for("paper-lastfm", "thrnn", epochs=1, item_embedding=8, batch_size=4, threads=1, device="cpu",
                     n_gap_buckets=10, seed=1)
    train_mod.train(tmp_path / "data", tmp_path / "run", cfg, progress=False)
    out = tmp_path / "metrics.json"
    parser = argparse.ArgumentParser()
    ev.configure_parser(parser)
    args = parser.parse_args(["--data", str(tmp_path / "data"), "--run", str(tmp_path / "run"), "--out", str(out),
                              "--report-dir", str(tmp_path / "report"), "--no-progress"])
    assert ev.main(args) == 0
    m = json.loads(out.read_text())
    for key in ("recall@5", "recall@10", "recall@20", "mrr@5", "mrr@10", "mrr@20", "first_item_recall@20",
                "first_item_mrr@20", "mae_hours", "mae_hours_mean", "n_targets", "n_gaps", "mae_hours_by_bucket"):
        assert key in m
    # protocol invariants counted straight from the split
    test = split.test
    assert m["n_targets"] == int((test["position"] > 0).sum())
    firsts = test[test["position"] == 0]
    assert m["first_item_n_targets"] == int((~firsts["is_continuation"]).sum())
    assert m["n_gaps"] == int((~firsts["is_continuation"] & firsts["gap_before_seconds"].notna()).sum())
    assert sum(b["count"] for b in m["mae_hours_by_bucket"]) == m["n_gaps"]
    # the CLI figures are exactly the shared protocol applied to predict_test
    model, cfg2 = load_run(tmp_path / "run")
    expected = ev.metrics_from_predictions(predict_test(model, split, cfg2))
    for key, value in expected.items():
        assert m[key] == (pytest.approx(value) if isinstance(value, float) else value)
    assert 0 <= m["recall@5"] <= m["recall@10"] <= m["recall@20"] <= 1
    assert (tmp_path / "report" / "report.md").exists()
