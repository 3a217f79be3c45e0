"""Model shapes, flags and masks: padding never changes a loss or a score."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_split
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import load_sessions
from thrnn.inference import predict_test
from thrnn.models import HierarchicalGRU, build_model
from thrnn.train import train_sessions

torch.set_num_threads(1)


def _model(model: str = "thrnn", n_items: int = 9, n_users: int = 4, **kw) -> HierarchicalGRU:
    cfg = config_for("paper-lastfm", model, item_embedding=8, user_embedding=3, gap_embedding=2, n_gap_buckets=10,
                     **kw)
    torch.manual_seed(0)
    return build_model(cfg, n_items, n_users)


def test_flags_select_the_levels_and_heads():
    names = {m: {n.split(".")[0] for n, _ in _model(m).named_parameters()} for m in ("thrnn", "hrnn", "gru4rec")}
    assert names["thrnn"] == {"item_emb", "intra_gru", "out", "user_emb", "gap_emb", "inter_gru", "time_head",
                              "first_out"}
    assert names["hrnn"] == {"item_emb", "intra_gru", "out", "inter_gru"}
    assert names["gru4rec"] == {"item_emb", "intra_gru", "out"}
    hrnn = _model("hrnn")
    with pytest.raises(RuntimeError, match="no first-item head"):
        hrnn.first_logits(torch.zeros(1, 8))
    with pytest.raises(RuntimeError, match="no time head"):
        hrnn.time_a(torch.zeros(1, 8))
    assert _model("thrnn").inter_gru.input_size == 8 + 3 + 2
    assert _model("hrnn").inter_gru.input_size == 8


def test_shapes_and_padding_column():
    m = _model().eval()
    users = torch.tensor([0, 3])
    reps = torch.randn(2, 15, 8)
    h = m.inter_state(users, reps, torch.randint(0, 11, (2, 15)), torch.tensor([0, 15]))
    assert h.shape == (2, 8)
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    states, targets, last = m.intra_targets(items[:, :-1], items[:, 1:], torch.tensor([2, 1]), h)
    assert states.shape == (3, 8) and last.shape == (2, 8)
    assert sorted(targets.tolist()) == [2, 3, 5]
    assert m.item_logits(last).shape == (2, 9)
    assert m.first_logits(h).shape == (2, 9)
    assert m.time_a(h).shape == (2,)
    scores = m.full_scores(m.item_logits(last))
    assert scores.shape == (2, 10) and bool(torch.isneginf(scores[:, 0]).all())


def test_inter_state_ignores_slots_beyond_the_count():
    m = _model().eval()
    users = torch.tensor([1, 2])
    reps = torch.randn(2, 15, 8)
    buckets = torch.randint(0, 11, (2, 15))
    counts = torch.tensor([3, 0])
    h = m.inter_state(users, reps, buckets, counts)
    garbage = reps.clone()
    garbage[0, 3:] = 99.0
    garbage[1, 1:] = -7.0
    b2 = buckets.clone()
    b2[:, 3:] = 4
    assert torch.equal(m.inter_state(users, garbage, b2, counts), h)
    # a user without history reads exactly one slot
    ref, _ = m.inter_gru(torch.cat([reps[1:2, :1], m.gap_emb(buckets[1:2, :1]), m.user_emb(users[1:2])[:, None]], 2))
    torch.testing.assert_close(h[1], ref[0, -1])


@pytest.mark.parametrize("others", [
    [[7, 7, 7, 7, 7, 7]],  # an even batch: plain GRU
    [[7] * 12, [5, 6], [6, 5], [4, 4]],  # a ragged batch: packed GRU
])
def test_intra_outputs_do_not_depend_on_other_rows_or_padding(others):
    m = _model("gru4rec").eval()
    session = [3, 1, 2, 9]
    alone = m.intra_padded(torch.tensor([session]), torch.tensor([4]), torch.zeros(1, 8))[0]
    width = max(len(o) for o in others + [session])
    rows = [o + [0] * (width - len(o)) for o in others] + [session + [0] * (width - len(session))]
    lengths = torch.tensor([len(o) for o in others] + [len(session)])
    padded = m.intra_padded(torch.tensor(rows), lengths, torch.zeros(len(rows), 8))
    torch.testing.assert_close(padded[-1, :4], alone)
    items = torch.tensor(rows)
    states, targets, final = m.intra_targets(items[:, :-1], items[:, 1:], lengths - 1, torch.zeros(len(rows), 8))
    torch.testing.assert_close(final[-1], alone[2])
    mine = [i for i, t in enumerate(targets.tolist()) if t in (1, 2, 9)]
    torch.testing.assert_close(states[mine], alone[:3])
    assert sorted(targets.tolist()) == sorted(t for o in rows for t in o[1:] if t)


def test_candidate_logits_are_columns_of_the_full_logits():
    m = _model().eval()
    x = torch.randn(4, 8)
    cand = torch.tensor([2, 5, 9])
    torch.testing.assert_close(m.item_logits(x, cand), m.item_logits(x)[:, cand - 1])
    torch.testing.assert_close(m.first_logits(x, cand), m.first_logits(x)[:, cand - 1])


@pytest.mark.parametrize("model", ["thrnn", "gru4rec"])
def test_padding_width_changes_neither_training_nor_scores(tmp_path, model):
    """The same split padded to L = 20 and to L = 26 gives bit-identical training and ranks."""
    split = tiny_split(n_users=5, n_items=10)
    cfg = config_for("paper-lastfm", model, epochs=2, item_embedding=8, batch_size=3, device="cpu", seed=3)
    models = []
    for width in (20, 26):
        data = load_sessions(split, max_len=width)
        train_sessions(data, tmp_path / f"w{width}", cfg, progress=False)
        models.append(torch.load(tmp_path / f"w{width}" / "model.pt", weights_only=True)["state_dict"])
        model_, cfg_ = load_run(tmp_path / f"w{width}")
        preds = predict_test(model_, data, cfg_)
        if width == 20:
            ref = preds.next_item_ranks
        else:
            assert (preds.next_item_ranks == ref).all()
    for k in models[0]:
        assert torch.equal(models[0][k], models[1][k]), k


def test_tied_embeddings_score_with_the_input_embeddings(tmp_path):
    m = _model(tie_embeddings=True).eval()
    names = {n for n, _ in m.named_parameters()}
    assert "out.bias" in names and "out.weight" not in names and "out.embedding.weight" not in names
    assert "out.weight" not in m.state_dict()
    with torch.no_grad():
        m.out.bias.copy_(torch.arange(9.0))
    x = torch.randn(3, 8)
    expected = x @ m.item_emb.weight[1:].t() + torch.arange(9.0)
    torch.testing.assert_close(m.item_logits(x), expected)
    cand = torch.tensor([1, 4, 9])
    torch.testing.assert_close(m.item_logits(x, cand), expected[:, cand - 1])
    # the output loss reaches the shared rows; the padding row gets no gradient
    loss = torch.nn.functional.cross_entropy(m.item_logits(x), torch.tensor([0, 1, 2]))
    loss.backward()
    grad = m.item_emb.weight.grad
    assert bool((grad[1:].abs().sum(1) > 0).all()) and bool((grad[0] == 0).all())


def test_tied_model_trains_saves_and_reloads_identically(tmp_path):
    split = tiny_split(n_users=5, n_items=10)
    cfg = config_for("paper-lastfm", "thrnn", epochs=2, item_embedding=8, batch_size=3, device="cpu", seed=3,
                     tie_embeddings=True)
    data = load_sessions(split)
    train_sessions(data, tmp_path, cfg, progress=False)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert "out.weight" not in saved and "out.bias" in saved
    model, cfg2 = load_run(tmp_path)
    # reloaded, the output layer is the reloaded input embedding again (shared storage, not a copy)
    assert cfg2.tie_embeddings and model.out.weight.data_ptr() == model.item_emb.weight[1:].data_ptr()
    torch.testing.assert_close(model.item_emb.weight, saved["item_emb.weight"])
    a = predict_test(model, data, cfg2)
    assert a.next_item_ranks.size == data.n_targets(data.is_test)
