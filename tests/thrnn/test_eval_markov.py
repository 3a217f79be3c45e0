"""Markov-1 ranks without dense score blocks (thrnn.baselines.ranking.markov_ranks) against the dense
reference: ``thrnn.metrics.ranks_from_scores`` of count(prev -> i) · (max_pop + 1) + pop(i)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from thrnn.baselines import ranking
from thrnn.metrics import ranks_from_scores


def _dense_ranks(transitions: sp.csr_matrix, pop: np.ndarray, prev: np.ndarray, targets: np.ndarray) -> np.ndarray:
    scores = torch.from_numpy(transitions[prev].toarray().astype(np.int64)) * (int(pop.max()) + 1) + torch.from_numpy(pop)
    return ranks_from_scores(scores, torch.from_numpy(targets)).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_markov_ranks_are_the_dense_ranks_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 40  # item ids 1..39; few popularity values and counts: many exact ties
    pop = np.r_[0, rng.integers(0, 4, n - 1)]
    src, dst = rng.integers(1, n, 300), rng.integers(1, n, 300)
    transitions = sp.coo_matrix((np.ones(300), (src, dst)), shape=(n, n)).tocsr()
    prev = np.r_[rng.integers(0, n, 500), 0]  # 0: no previous item (an empty row)
    targets = rng.integers(1, n, 501)
    got = ranking.markov_ranks(transitions, pop, prev, targets)
    want = _dense_ranks(transitions, pop, prev, targets)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64
    assert (want > 1 + (transitions[prev].toarray() * (pop.max() + 1) + pop > (  # ties were counted
        np.asarray(transitions[prev, targets]).ravel() * (pop.max() + 1) + pop[targets])[:, None])[:, 1:].sum(1)).any()


def test_markov_ranks_by_hand_and_in_blocks(monkeypatch):
    # items 1..4, popularity 3, 1, 1, 0; prev 1 -> 3 (twice), 1 -> 4 (once); scale 4
    pop = np.array([0, 3, 1, 1, 0])
    transitions = sp.csr_matrix((np.array([2.0, 1.0]), (np.array([1, 1]), np.array([3, 4]))), shape=(5, 5))
    prev, targets = np.array([1, 1, 1, 1, 2, 2, 2]), np.array([3, 4, 1, 2, 1, 2, 3])
    # prev 1 scores 3, 1, 9, 4: 3 > 4 > 1 > 2; prev 2 scores 3, 1, 1, 0: 1, then 2 and 3 tied (rank 3 each)
    want = [1, 2, 3, 4, 1, 3, 3]
    np.testing.assert_array_equal(ranking.markov_ranks(transitions, pop, prev, targets), want)
    monkeypatch.setattr(ranking, "_TARGET_BLOCK", 2)
    np.testing.assert_array_equal(ranking.markov_ranks(transitions, pop, prev, targets), want)
    assert ranking.markov_ranks(transitions, pop, prev[:0], targets[:0]).shape == (0,)
    with pytest.raises(ValueError, match="padding"):
        ranking.markov_ranks(transitions, pop, prev[:1], np.array([0]))
