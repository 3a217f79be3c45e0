"""The hand-written GRU recurrence (thrnn.models.fast_gru) against nn.GRU, the packed training layout
(thrnn.train_batches) against the per-user FIFO it replaces, and the mask dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from tests.conftest import tiny_split
from thrnn.config import config_for
from thrnn.data import HistoryState, load_sessions, user_parallel_batches
from thrnn.models import build_model
from thrnn.models.fast_gru import gru_packed, previous_index
from thrnn.models.hier_gru import MaskDropout
from thrnn.train_batches import fifo_sources, plan_batches

torch.set_num_threads(1)


def _grads(out: torch.Tensor, weight: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad((out * weight).sum(), inputs))


@pytest.mark.parametrize("lengths", [[6, 6, 4, 3, 3, 1], [5, 5, 5], [1]])
def test_packed_recurrence_equals_nn_gru_in_double(lengths):
    """Outputs and every gradient (inputs, h0, the four weights) agree with nn.GRU on a PackedSequence
    to double-precision rounding, ragged and even batches alike."""
    torch.manual_seed(0)
    dt, hidden, n_in = torch.float64, 7, 5
    gru = torch.nn.GRU(n_in, hidden).to(dt)
    lengths_t = torch.tensor(lengths)
    x = torch.randn(max(lengths), len(lengths), n_in, dtype=dt)
    packed = pack_padded_sequence(x, lengths_t)
    sizes = packed.batch_sizes.tolist()
    data = packed.data.clone().requires_grad_(True)
    h0 = torch.randn(len(lengths), hidden, dtype=dt, requires_grad=True)
    inputs = [data, h0, *gru.parameters()]
    ref, _ = gru(PackedSequence(data, packed.batch_sizes), h0[None])
    weight = torch.randn_like(ref.data)
    expected = _grads(ref.data, weight, inputs)
    gi = torch.addmm(gru.bias_ih_l0, data, gru.weight_ih_l0.t())
    out = gru_packed(gi, h0, gru.weight_hh_l0, gru.bias_hh_l0, sizes, previous_index(sizes))
    torch.testing.assert_close(out, ref.data, rtol=0, atol=1e-13)
    for got, want in zip(_grads(out, weight, inputs), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_padded_layout_needs_no_previous_index():
    torch.manual_seed(1)
    gru = torch.nn.GRU(3, 4).double()
    x, h0 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    ref, _ = gru(x, h0[None])
    gi = torch.addmm(gru.bias_ih_l0, x.reshape(10, 3), gru.weight_ih_l0.t())
    out = gru_packed(gi, h0, gru.weight_hh_l0, gru.bias_hh_l0, [2] * 5)
    torch.testing.assert_close(out, ref.reshape(10, 4), rtol=0, atol=1e-14)
    assert previous_index([3, 2, 1]).tolist() == [0, 1, 2, 3, 4, 6]  # cat([h0 (3 rows), out])
    with pytest.raises(ValueError, match="every row"):
        gru_packed(gi, h0[:1], gru.weight_hh_l0, gru.bias_hh_l0, [2] * 5)


def test_packed_recurrence_passes_gradcheck():
    torch.manual_seed(2)
    sizes = [3, 2, 2, 1]
    args = [torch.randn(sum(sizes), 6, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
            torch.randn(6, 2, dtype=torch.float64, requires_grad=True),
            torch.randn(6, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda *a: gru_packed(*a, sizes, previous_index(sizes)), args)


def test_mask_dropout_keeps_the_expectation_and_is_identity_in_eval():
    torch.manual_seed(3)
    drop = MaskDropout(0.25)
    y = drop(torch.ones(200_000))
    assert torch.unique(y).tolist() == [0.0, pytest.approx(4 / 3, rel=1e-7)]
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.005
    drop.eval()
    x = torch.randn(10)
    assert drop(x) is x
    with pytest.raises(ValueError):
        MaskDropout(1.0)


def test_fifo_sources_are_what_the_per_user_fifo_holds():
    """Training the batches in order, the FIFO of HistoryState before each row is exactly the
    representations of the rows fifo_sources names (oldest first), for every batch size."""
    data = load_sessions(tiny_split(n_users=6, max_sessions=9))
    mask = ~data.is_test
    k = 3
    count, source = fifo_sources(data, mask, k)
    for batch_size in (1, 2, 4):
        state = HistoryState(data.n_users, k, hidden=1)
        for rows in user_parallel_batches(data, mask, batch_size):
            users = data.users[torch.from_numpy(rows)]
            reps, _, counts = state.get(users)
            assert counts.tolist() == count[rows].tolist()
            for i, r in enumerate(rows):
                want = [float(s) for s in source[r, : count[r]]]
                assert reps[i, : count[r], 0].tolist() == want
                assert (source[r, count[r]:] == -1).all()
            state.push(users, torch.from_numpy(rows).float()[:, None], torch.zeros(len(rows), dtype=torch.long))


@pytest.mark.parametrize("model", ["thrnn", "hrnn", "gru4rec"])
def test_packed_training_forward_equals_the_padded_one(model):
    """The packed layout's inter states and intra outputs (dropout off) equal inter_state and
    intra_targets of the padded layout that inference uses, on every batch of a split."""
    torch.manual_seed(4)
    data = load_sessions(tiny_split(n_users=7, max_sessions=8))
    cfg = config_for("lastfm", model, item_embedding=6, user_embedding=3, gap_embedding=2, history_sessions=3)
    net = build_model(cfg, data.n_items, data.n_users).double().eval()
    mask = ~data.is_test
    buckets = data.gap_buckets(cfg.n_gap_buckets, cfg.gap_upper_hours)
    batches = user_parallel_batches(data, mask, 3)
    plans = plan_batches(data, batches, mask, cfg.history_sessions, ~data.is_continuation, data.time_mask, buckets)
    state = HistoryState(data.n_users, cfg.history_sessions, net.hidden, dtype=torch.float64)
    store = torch.zeros(data.n_sessions + 1, net.hidden, dtype=torch.float64)
    for rows_np, b in zip(batches, plans, strict=True):
        rows = b.rows  # the padded path in the plan's row order
        assert sorted(rows.tolist()) == sorted(rows_np.tolist())
        users = data.users[rows]
        h_ref = net.inter_state(users, *state.get(users), counts_cpu=state.counts_cpu[users])
        n_in = data.lengths[rows] - 1
        x = data.items[rows, : int(n_in.max()) + 1]
        states_ref, targets_ref, final_ref = net.intra_targets(x[:, :-1], x[:, 1:], n_in, h_ref)
        h = net.inter_packed(store[b.inter_reps], b.inter_buckets, b.inter_users, b.inter_sizes, b.inter_prev,
                             b.inter_last)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
        states, final = net.intra_packed(b.intra_items, h[b.intra_order], b.intra_sizes, b.intra_prev,
                                         b.intra_last)
        torch.testing.assert_close(final, final_ref[b.intra_order], rtol=0, atol=1e-12)
        # the same (state, target) pairs, in another order
        key = lambda s, t: sorted(zip(t.tolist(), np.round(s[:, 0].tolist(), 9).tolist(), strict=True))  # noqa: E731
        assert key(states, b.target_items) == key(states_ref, targets_ref)
        assert b.n_targets == int(n_in.sum()) == b.target_items.numel()
        state.push(users, final_ref.detach(), buckets[rows])
        store[b.intra_rows] = final.detach()


def test_zero_start_equals_an_explicit_zero_state():
    """h0 = None (nn.GRU's default) skips the first step's product: the same outputs and gradients."""
    torch.manual_seed(5)
    sizes = [4, 3, 1]
    gi = torch.randn(8, 9, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(9, 3, dtype=torch.float64, requires_grad=True), torch.randn(9, dtype=torch.float64,
                                                                                 requires_grad=True)
    prev = previous_index(sizes)
    weight = torch.randn(8, 3, dtype=torch.float64)
    explicit = gru_packed(gi, torch.zeros(4, 3, dtype=torch.float64), w, b, sizes, prev)
    implicit = gru_packed(gi, None, w, b, sizes, prev)
    torch.testing.assert_close(implicit, explicit, rtol=0, atol=0)
    for got, want in zip(_grads(implicit, weight, [gi, w, b]), _grads(explicit, weight, [gi, w, b]), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
