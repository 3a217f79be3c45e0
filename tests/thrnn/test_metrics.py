import numpy as np
import pytest
import torch

from thrnn.metrics import (
    RankingAccumulator,
    gap_bucket_index,
    ranking_metrics,
    ranks_from_scores,
    return_time_mae,
)


def test_rank_counts_ties_against_model_and_ignores_padding():
    # columns: pad, item1..item4
    scores = torch.tensor(
        [
            [9.0, 1.0, 2.0, 2.0, 0.5],  # target 2 ties with item 3 -> rank 1 + 0 higher + 1 equal = 2
            [9.0, 1.0, 2.0, 3.0, 0.5],  # target 1: items 2, 3 higher -> 3; padding (9.0) ignored
            [0.0, 5.0, 5.0, 5.0, 5.0],  # all equal -> worst rank 4
        ]
    )
    ranks = ranks_from_scores(scores, torch.tensor([2, 1, 3]))
    assert ranks.tolist() == [2, 3, 4]


def test_rank_rejects_padding_target():
    with pytest.raises(ValueError):
        ranks_from_scores(torch.zeros(1, 3), torch.tensor([0]))


def test_ranking_metrics_by_hand():
    # ranks 1, 6, 11, 25: recall@5 = 1/4, @10 = 2/4, @20 = 3/4
    m = ranking_metrics(np.array([1, 6, 11, 25]))
    assert m["recall@5"] == 0.25 and m["recall@10"] == 0.5 and m["recall@20"] == 0.75
    assert m["mrr@5"] == pytest.approx(1 / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 6) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 6 + 1 / 11) / 4)
    assert m["n_targets"] == 4
    acc = RankingAccumulator()
    acc.add(torch.tensor([1, 6]))
    acc.add([11, 25])
    assert acc.result(prefix="first_item_") == {f"first_item_{k}": v for k, v in m.items()}


def test_gap_buckets_and_mae_by_hand():
    assert gap_bucket_index(np.array([0.5, 2.0, 2.01, 12.0, 499.0, 500.0, 900.0])).tolist() == [
        0, 0, 1, 1, 17, 17, 17,
    ]
    out = return_time_mae(np.array([1.0, 10.0, 800.0]), np.array([3.0, 4.0, 600.0]))
    # errors: 2, 6, |500 - 500| = 0 (both capped)
    assert out["mae_hours"] == pytest.approx(8 / 3)
    assert out["n_gaps"] == 3
    b = out["mae_hours_by_bucket"]
    assert b[0] == {"upper_hours": 2.0, "count": 1, "share": 1 / 3, "mae_hours": 2.0}
    assert b[1]["count"] == 1 and b[1]["mae_hours"] == 6.0
    assert b[-1]["count"] == 1 and b[-1]["mae_hours"] == 0.0
    assert b[2] == {"upper_hours": 36.0, "count": 0, "share": 0.0, "mae_hours": None}
