"""Chunked full-catalogue scoring (docs/eval_speed.md) against the dense reference: the same scores bit
for bit, the same ranks (ties against the model) and the same published top-N lists (ties by item id)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from tests.conftest import tiny_split
from tests.thrnn.conftest import reference_inter as _inter
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import load_sessions
from thrnn.inference import ChunkScorer, item_mask, personal_history, predict_test, replay
from thrnn.metrics import ranks_from_scores, top_k
from thrnn.models import HierarchicalGRU
from thrnn.personal import COMPONENTS, PersonalHistory, _first_occurrence
from thrnn.scoring import score_users
from thrnn.train import train_sessions

torch.set_num_threads(1)
K = len(COMPONENTS)


def _history(window: int = 50):
    # few items, many sessions: the windows hold each item many times
    data = load_sessions(tiny_split(n_users=6, n_items=7, seed=2, max_sessions=10))
    return data, PersonalHistory(data, ~data.is_test, window=window, decay=0.97)


def _dense_scores(model, ph, states, t, u, first, blocked):
    """The reference: the model's (T, N+1) scores from the dense (T, K, N+1) components, blocked at -inf."""
    score = model.first_scores if first else model.next_scores
    if model.mixture:
        comps, mass = ph.dense(t, u, first=first, n_columns=model.n_items + 1)
        scores = score(states, comps, mass)
    else:
        scores = score(states)
    return scores.masked_fill(blocked, float("-inf"))


def test_first_occurrence_by_hand():
    items = torch.tensor([[5, 3, 5, 0, 3, 5], [1, 1, 1, 2, 0, 0]])
    assert _first_occurrence(items).tolist() == [[0, 1, 0, 3, 1, 0], [0, 0, 0, 3, 4, 4]]


@pytest.mark.parametrize("window", [3, 50])
@pytest.mark.parametrize("first", [False, True])
def test_sparse_components_are_the_dense_ones_bit_for_bit(window, first):
    data, ph = _history(window)
    t = torch.cat([torch.arange(ph.n_events), ph.user_end])
    u = torch.cat([ph.event_user, torch.arange(data.n_users)])
    n_cols = data.n_items + 3  # a model catalogue larger than the split's
    dense, dmass = ph.dense(t, u, first=first, n_columns=n_cols)
    entries, mass = ph.sparse(t, u, first=first, n_columns=n_cols)
    assert len(entries) == K
    got = torch.zeros_like(dense)
    for k, (rows, items, values) in enumerate(entries):
        assert values.dtype == torch.float32 and bool((items >= 1).all()) and bool((items < n_cols).all())
        keys = rows * n_cols + items
        assert keys.unique().numel() == keys.numel()  # one entry per (row, item) and component
        got[rows, k, items] = values
    assert torch.equal(got, dense)
    assert torch.equal(mass, dmass)
    # the windows really sum repeated items (what the scatter-add order must reproduce)
    assert bool((dense[:, 3:] > 0).sum(2).lt(torch.tensor(window)).any())


@pytest.mark.parametrize("max_rows", [8, 24, 4096])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("mixture", [True, False])
def test_scorer_gives_the_dense_scores_bit_for_bit(mixture, tie, first, max_rows):
    data, ph = _history()
    torch.manual_seed(0)
    model = HierarchicalGRU(n_items=data.n_items + 3, n_users=data.n_users, hidden=16, dropout=0.0,
                            tie_embeddings=tie, mixture=mixture).eval()
    if mixture:  # gates that depend on the state and the masses (they start constant)
        for gate in (model.next_gate, model.first_gate):
            nn.init.normal_(gate.proj.weight, std=0.5)
    t = torch.arange(ph.n_events)
    u = ph.event_user
    states = torch.randn(len(t), 16)
    blocked = torch.zeros(model.n_items + 1, dtype=torch.bool)
    blocked[[0, 2, model.n_items]] = True
    with torch.no_grad():
        want = _dense_scores(model, ph, states, t, u, first, blocked)[:, 1:]
        scorer = ChunkScorer(model, ph, blocked, max_rows=max_rows)
        got = torch.cat([scorer.scores(states[s:s + max_rows], t[s:s + max_rows], u[s:s + max_rows], first=first)
                         .clone() for s in range(0, len(t), max_rows)])
    assert torch.equal(got, want)


@pytest.mark.parametrize("mixture", [True, False])
def test_ranks_with_ties_are_the_reference_ranks(mixture):
    data, ph = _history()
    torch.manual_seed(1)
    model = HierarchicalGRU(n_items=data.n_items + 5, n_users=data.n_users, hidden=16, dropout=0.0,
                            tie_embeddings=True, mixture=mixture).eval()
    n = model.n_items
    with torch.no_grad():  # items 3, 8, 9, 10, 11 score alike in the neural part: exact ties
        for w in (model.item_emb.weight, model.first_out.weight):
            off = 0 if w is model.item_emb.weight else 1  # the tied output reads embedding rows 1..N
            w[[3 - off + o for o in (0, 5, 6, 7, 8)]] = w[3 - off].clone()
        for b in (model.out.bias, model.first_out.bias):
            b[[2, 7, 8, 9, 10]] = b[2].clone()
    t = torch.arange(ph.n_events)
    u = ph.event_user
    states = torch.randn(len(t), 16)
    targets = torch.tensor([3, 8, 9, 1, 2, n])[torch.arange(len(t)) % 6]
    blocked = torch.zeros(n + 1, dtype=torch.bool)
    blocked[[0, 2]] = True  # target 2 is blocked: it ranks last (N)
    for first in (False, True):
        with torch.no_grad():
            dense = _dense_scores(model, ph, states, t, u, first, blocked)
            want = ranks_from_scores(dense, targets)
            got = torch.cat([ChunkScorer(model, ph, blocked, max_rows=16).ranks(
                states[s:s + 16], t[s:s + 16], u[s:s + 16], targets[s:s + 16], first=first)
                for s in range(0, len(t), 16)])
        assert torch.equal(got, want)
        higher = (dense[:, 1:] > dense.gather(1, targets[:, None])).sum(1)
        assert bool((want > higher + 1).any())  # ties were counted against the model
        assert set(want[targets == 2].tolist()) == {n}


def test_top_k_by_hand():
    inf = float("inf")
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [5.0, 4.0, 4.0, 4.0, 0.0], [-inf, 2.0, -inf, -inf, 1.0]])
    v, c = top_k(scores, 2)
    assert c.tolist() == [[1, 2], [0, 1], [1, 4]] and v.tolist() == [[3, 3], [5, 4], [2, 1]]
    v, c = top_k(scores, 3)
    assert c.tolist() == [[1, 2, 4], [0, 1, 2], [1, 4, 0]] and v.tolist() == [[3, 3, 3], [5, 4, 4], [2, 1, -inf]]
    v, c = top_k(scores, 9)  # more than the columns: every column, best first
    assert c.tolist() == [[1, 2, 4, 3, 0], [0, 1, 2, 3, 4], [1, 4, 0, 2, 3]]
    v, c = top_k(torch.tensor([[0.5, 0.9, 0.1, 0.7]]), 2)  # no ties: what torch.topk gives
    assert c.tolist() == [[1, 3]] and v.tolist() == [[pytest.approx(0.9), pytest.approx(0.7)]]


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    """A THRNN of the product preset (the mixture, the log-normal head) trained 1 epoch on a tiny split."""
    split = tiny_split(n_users=6, n_items=40, seed=7, max_sessions=9)
    run = tmp_path_factory.mktemp("mix")
    cfg = config_for("lastfm", "thrnn", item_embedding=8, epochs=1, batch_size=3, device="cpu",
                     history_sessions=4, n_gap_buckets=20, personal_window=50, lr_schedule="constant")
    train_sessions(load_sessions(split), run, cfg, progress=False)
    model, cfg = load_run(run)
    return model, cfg, split


@torch.no_grad()
def test_predict_test_ranks_are_a_dense_per_user_replay(mixture_run):
    """Every test target's rank from one user and one session at a time, scored densely at the end."""
    model, cfg, split = mixture_run
    data = load_sessions(split)
    ph = personal_history(model, data, cfg)
    buckets = data.gap_buckets(cfg.n_gap_buckets, cfg.gap_upper_hours)
    nxt: dict[str, list[torch.Tensor]] = {"s": [], "t": [], "u": [], "y": []}
    fst: dict[str, list[torch.Tensor]] = {"s": [], "t": [], "u": [], "y": []}
    for u in range(data.n_users):
        fifo: list = []
        for r in (data.users == u).nonzero().squeeze(1).tolist():
            n = int(data.lengths[r])
            items = data.items[r, :n]
            h = _inter(model, cfg, u, fifo)
            outs = model.intra_gru(model.item_emb(items)[None], h[None, None])[0][0]
            if bool(data.is_test[r]):
                start = int(ph.row_start[r])
                for d, s, t, y in ((nxt, outs[: n - 1], start + torch.arange(1, n), items[1:]),
                                   (fst, h[None], torch.tensor([start]), items[:1])):
                    if d is fst and bool(data.is_continuation[r]):
                        continue
                    d["s"].append(s)
                    d["t"].append(t)
                    d["u"].append(torch.full((len(t),), u))
                    d["y"].append(y)
            fifo.append((outs[n - 2], int(buckets[r])))
    blocked = item_mask(cfg, data, n_items=model.n_items)
    want = {}
    for name, d in (("next", nxt), ("first", fst)):
        s, t, u, y = (torch.cat(d[k]) for k in "stuy")
        want[name] = ranks_from_scores(_dense_scores(model, ph, s, t, u, name == "first", blocked), y).numpy()
    pred = predict_test(model, split, cfg)
    assert pred.next_item_ranks.tolist() == want["next"].tolist()
    assert pred.first_item_ranks.tolist() == want["first"].tolist()


def test_recommendations_with_ties_are_the_dense_top_n(mixture_run):
    """A flat neural head: the items without personal mass tie, and the top N cuts through them."""
    model, cfg, split = mixture_run
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.first_out.weight.zero_()
        model.first_out.bias.zero_()
    data = load_sessions(split)
    everything = torch.ones(data.n_sessions, dtype=torch.bool)
    ph = personal_history(model, data, cfg, count_rows=everything)
    r = replay(model, data, cfg, everything, torch.zeros_like(everything), personal=ph)
    users = torch.arange(data.n_users)
    blocked = item_mask(cfg, data, n_items=model.n_items)
    with torch.no_grad():
        h = model.inter_state(users, *r.state.get(users), counts_cpu=r.state.counts_cpu[users])
        dense = _dense_scores(model, ph, h, ph.user_end, users, True, blocked)
    values, order = torch.sort(dense, dim=1, descending=True, stable=True)  # equal scores: lower item id first
    # N: one past the items above the lowest finite score of the first user with several items there
    low = torch.where(values.isfinite(), values, torch.inf).min(1, keepdim=True).values
    u0 = int(torch.nonzero((values == low).sum(1) >= 2)[0])
    n = int((values[u0] > low[u0]).sum()) + 1
    day = (split.test["event_time"].max() + pd.Timedelta(days=1)).date()
    recs, _ = score_users(model, split, cfg, run_date=day, top_k=n)
    for u, grp in recs.groupby("user_id"):
        assert grp["rank"].tolist() == list(range(1, n + 1))
        assert grp["item_id"].tolist() == order[u, :n].tolist()
        assert torch.equal(torch.tensor(grp["score"].to_numpy()), values[u, :n])
    assert values[u0, n - 1] == values[u0, n]  # the cut-off fell inside a group of equal scores


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ranks_and_recommendations_equal_cpu(mixture_run):
    model, cfg, split = mixture_run
    cpu = predict_test(model, split, cfg, device="cpu")
    gpu = predict_test(model, split, cfg, device="cuda")
    assert (cpu.next_item_ranks == gpu.next_item_ranks).mean() > 0.99  # float sums may differ in the last bit
    day = (split.test["event_time"].max() + pd.Timedelta(days=1)).date()
    rc, _ = score_users(model.cpu(), split, cfg, run_date=day, top_k=5, device="cpu")
    rg, _ = score_users(model, split, cfg, run_date=day, top_k=5, device="cuda")
    assert len(rc) == len(rg)
