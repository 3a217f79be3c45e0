"""Chunked scoring finished block by block after the product (docs/eval_speed.md): any block height gives
the dense scores, ranks and top-N bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.thrnn.test_eval_chunked import _dense_scores, _history
from thrnn.inference import ChunkScorer
from thrnn.metrics import ranks_from_scores, top_k
from thrnn.models import HierarchicalGRU


def _model(data, mixture: bool, seed: int = 0) -> HierarchicalGRU:
    torch.manual_seed(seed)
    model = HierarchicalGRU(n_items=data.n_items + 3, n_users=data.n_users, hidden=16, dropout=0.0,
                            tie_embeddings=True, mixture=mixture).eval()
    if mixture:  # gates that depend on the state and the masses (they start constant)
        for gate in (model.next_gate, model.first_gate):
            nn.init.normal_(gate.proj.weight, std=0.5)
    return model


def _blocked(n: int) -> torch.Tensor:
    blocked = torch.zeros(n + 1, dtype=torch.bool)
    blocked[[0, 2, n]] = True
    return blocked


@pytest.mark.parametrize("host_numpy", [True, False])  # False: torch's indexing, as on a GPU
@pytest.mark.parametrize("block_rows", [1, 3, 5, 24])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("mixture", [True, False])
def test_blocks_give_the_dense_scores_ranks_and_top_n(mixture, first, block_rows, host_numpy):
    data, ph = _history()
    model = _model(data, mixture)
    t = torch.arange(ph.n_events)
    u = ph.event_user
    states = torch.randn(len(t), 16)
    n = model.n_items
    targets = (torch.arange(len(t)) % n) + 1  # every item once in a while, blocked ones too
    blocked = _blocked(n)
    size = 24
    with torch.no_grad():
        dense = _dense_scores(model, ph, states, t, u, first, blocked)
        scorer = ChunkScorer(model, ph, blocked, max_rows=size, block_rows=block_rows)
        assert scorer.block_rows == block_rows and scorer.host_numpy
        scorer.host_numpy = host_numpy
        parts = [(s, slice(s, s + size)) for s in range(0, len(t), size)]
        got = torch.cat([scorer.scores(states[sl], t[sl], u[sl], first=first).clone() for _, sl in parts])
        ranks = torch.cat([scorer.ranks(states[sl], t[sl], u[sl], targets[sl], first=first) for _, sl in parts])
        tops = [scorer.top(states[sl], t[sl], u[sl], 4, first=first) for _, sl in parts]
    assert torch.equal(got, dense[:, 1:])
    assert torch.equal(ranks, ranks_from_scores(dense, targets))
    want_v, want_c = top_k(dense[:, 1:], 4)
    assert torch.equal(torch.cat([v for v, _ in tops]), want_v)
    assert torch.equal(torch.cat([c for _, c in tops]), want_c + 1)
    assert set(ranks[targets == 2].tolist()) == {n}  # a blocked target ranks last


@pytest.mark.parametrize("first", [False, True])
def test_sparse_rows_do_not_decrease_within_a_component(first):
    data, ph = _history(window=20)
    t = torch.cat([torch.arange(ph.n_events), ph.user_end]).flip(0)  # targets in no particular order
    u = torch.cat([ph.event_user, torch.arange(data.n_users)]).flip(0)
    entries, _ = ph.sparse(t, u, first=first, n_columns=data.n_items + 1)
    for rows, _, _ in entries:
        assert bool((rows[1:] >= rows[:-1]).all())
    assert sum(len(rows) for rows, _, _ in entries) > 2 * len(t)


def test_default_block_is_cache_sized_on_cpu_and_empty_chunks_work():
    data, ph = _history()
    model = _model(data, True)
    blocked = _blocked(model.n_items)
    assert ChunkScorer(model, ph, blocked).block_rows == ChunkScorer(model, ph, blocked).max_rows  # tiny catalogue
    big = HierarchicalGRU(n_items=100_000, n_users=data.n_users, hidden=8, dropout=0.0, mixture=False).eval()
    scorer = ChunkScorer(big, None, torch.zeros(100_001, dtype=torch.bool))
    assert (scorer.max_rows, scorer.block_rows) == (328, 20)  # 8 MB of scores at a time after a 131 MB product
    with torch.no_grad():
        s = ChunkScorer(model, ph, blocked, block_rows=2)
        empty = torch.zeros(0, dtype=torch.long)
        assert s.ranks(torch.zeros(0, 16), empty, empty, empty, first=False).shape == (0,)
        values, items = s.top(torch.zeros(0, 16), empty, empty, 3, first=True)
        assert values.shape == items.shape == (0, 3)


@pytest.mark.parametrize("first", [False, True])
def test_sparse_with_short_histories_in_a_long_window_is_dense_bit_for_bit(first):
    """Targets whose histories fill a short prefix of the window (the window's empty tail is dropped)."""
    data, ph = _history(window=500)
    t = torch.cat([torch.arange(ph.n_events), ph.user_end])
    u = torch.cat([ph.event_user, torch.arange(data.n_users)])
    for sel in (t - ph.user_start[u] < 9, t - ph.user_start[u] < 2, torch.ones_like(t, dtype=torch.bool)):
        ts, us = t[sel], u[sel]
        assert int((ts - ph.user_start[us]).max()) < 500  # the tail of every window is empty
        dense, dmass = ph.dense(ts, us, first=first, n_columns=data.n_items + 1)
        entries, mass = ph.sparse(ts, us, first=first, n_columns=data.n_items + 1)
        got = torch.zeros_like(dense)
        for k, (rows, items, values) in enumerate(entries):
            got[rows, k, items] = values
        assert torch.equal(got, dense) and torch.equal(mass, dmass)
        assert bool((dense[:, 3:] > 0).any())
