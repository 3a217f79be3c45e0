"""Personal-history components and the repeat-aware mixture: hand-computed values, no leakage."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import T0, H, tiny_split
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import load_sessions
from thrnn.inference import predict_test
from thrnn.io import split_from_sessions
from thrnn.models import HierarchicalGRU
from thrnn.models.mixture import NEXT_INIT, MixtureGate, mixture_log_prob, mixture_probs
from thrnn.personal import COMPONENTS, RECENT_DECAY, PersonalHistory
from thrnn.scoring import score_users
from thrnn.train import train_sessions

torch.set_num_threads(1)
G, CO, CA, U, U2, D, R = range(len(COMPONENTS))  # component columns


def _sessions(items: list[list[int]], start: float) -> list[list[tuple[int, float]]]:
    return [[(i, start + s * 10 * H + 60.0 * k) for k, i in enumerate(sess)] for s, sess in enumerate(items)]


def _data():
    # user 0: 5 sessions (4 train, 1 test); user 1: 3 sessions (2 train, 1 test)
    split = split_from_sessions({
        0: _sessions([[1, 2, 3], [2, 3, 1], [1, 2], [3, 1, 2], [2, 3]], T0),
        1: _sessions([[4, 1], [1, 4], [4, 2]], T0 + 1),
    })
    return load_sessions(split)


# user 0's flat events:  index 0  1  2  3  4  5  6  7  8  9 10 | 11 12 (test)
FLAT0 = [1, 2, 3, 2, 3, 1, 1, 2, 3, 1, 2, 2, 3]


def test_flat_history_and_transition_counts():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=500, decay=0.9)
    assert ph.flat.tolist() == FLAT0 + [4, 1, 1, 4, 4, 2]
    assert ph.row_start.tolist() == [0, 3, 6, 8, 11, 13, 15, 17]
    assert ph.user_start.tolist() == [0, 13]
    assert ph.user_end.tolist() == [13, 19]
    # within-session transitions of the training sessions: 1->2 x3, 2->3 x2, 3->1 x2, 4->1, 1->4
    w = ph.within.toarray()
    assert {(a, b): int(w[a, b]) for a, b in zip(*w.nonzero(), strict=True)} == {
        (1, 2): 3, (2, 3): 2, (3, 1): 2, (4, 1): 1, (1, 4): 1}
    # last item -> first item of the next training session: 3->2, 1->1 (x2: both users), 2->3
    b = ph.between.toarray()
    assert {(a, c): int(b[a, c]) for a, c in zip(*b.nonzero(), strict=True)} == {(3, 2): 1, (1, 1): 2, (2, 3): 1}


def test_seen_before_marks_repeats_of_the_same_user():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=2, decay=0.9)  # the window does not limit it
    assert ph.seen_before().tolist() == [False, False, False] + [True] * 10 + [False, False, True, True, True, False]


def test_target_probabilities_by_hand():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=500, decay=0.9)
    # test target: user 0, event 12 (item 3), cur = event 11 (item 2), prev = event 10 (item 2)
    p, mass = ph.target_probs(torch.tensor([12]), torch.tensor([0]), first=False)
    # global: 2->3 twice out of 2 transitions from 2
    assert p[0, G] == pytest.approx(1.0) and mass[0, G] == 2
    # user: 2 occurs before event 11 at events 1, 3, 7, 10, followed by 3, 3, 3, 2 (10->11 crosses sessions)
    assert p[0, U] == pytest.approx(3 / 4) and mass[0, U] == 4
    # second order (2, 2) never occurred before: no mass
    assert p[0, U2] == 0 and mass[0, U2] == 0
    # decayed frequency: item 3 at events 2, 4, 8 = ages 9, 7, 3 out of events 0..11 (ages 11..0)
    total = sum(0.9 ** a for a in range(12))
    assert p[0, D] == pytest.approx((0.9 ** 9 + 0.9 ** 7 + 0.9 ** 3) / total, rel=1e-6)
    assert mass[0, D] == pytest.approx(total, rel=1e-6)
    r_total = sum(RECENT_DECAY ** a for a in range(12))
    assert p[0, R] == pytest.approx((RECENT_DECAY ** 9 + RECENT_DECAY ** 7 + RECENT_DECAY ** 3) / r_total, rel=1e-6)


def test_session_cooccurrence_by_hand():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=500, decay=0.9)
    # C[a, b] = sum of 1 / distance over pairs a ... b of a training session:
    # [1 2 3] [2 3 1] [1 2] [3 1 2] [4 1] [1 4]
    c = ph.cooc.toarray()
    assert {(a, b): float(c[a, b]) for a, b in zip(*c.nonzero(), strict=True)} == {
        (1, 2): 3.0, (1, 3): 0.5, (1, 4): 1.0, (2, 3): 2.0, (2, 1): 0.5, (3, 1): 2.0, (3, 2): 0.5, (4, 1): 1.0}
    # test target event 12 (item 3): the query is event 11 (item 2) with weight 1
    p, mass = ph.target_probs(torch.tensor([12]), torch.tensor([0]), first=False)
    assert p[0, CO] == pytest.approx(2 / 2.5) and mass[0, CO] == pytest.approx(2.5)
    # either order: row 2 of C + C^T is {3: 2 + 0.5, 1: 0.5 + 3}
    assert p[0, CA] == pytest.approx(2.5 / 6)
    # training target event 10 (item 2 of [3 1 2]), query 3 (weight 1/2) and 1 (weight 1); its own session
    # adds 3->1: 1, 1->2: 1, 3->2: 1/2, so leave-one-out leaves 3->2: 0 of 1.0 and 1->2: 2 of 3.5
    p, mass = ph.target_probs(torch.tensor([10]), torch.tensor([0]), first=False, leave_one_out=True)
    assert p[0, CO] == pytest.approx((0.5 * 0 + 1 * 2 / 3.5) / 1.5) and mass[0, CO] == pytest.approx(4.0)
    p, _ = ph.target_probs(torch.tensor([10]), torch.tensor([0]), first=False)
    assert p[0, CO] == pytest.approx((0.5 * 0.5 / 2.5 + 1 * 3 / 4.5) / 1.5)
    # first item of the test session (event 11, item 2): the query is the previous session [3 1 2]
    p, _ = ph.target_probs(torch.tensor([11]), torch.tensor([0]), first=True)
    assert p[0, CO] == pytest.approx((0.5 / 2.5 / 3 + 3 / 4.5 / 2 + 0) / (1 / 3 + 1 / 2 + 1))


def test_cooccurrence_leave_one_out_equals_counting_without_the_session():
    data = load_sessions(tiny_split(n_users=5, n_items=7, seed=11, max_sessions=9))
    counted = ~data.is_test
    ph = PersonalHistory(data, counted, window=500, decay=0.9)
    every = torch.arange(ph.n_events)
    loo, loo_mass = ph.target_probs(every, ph.event_user, first=False, leave_one_out=True)
    for row in torch.nonzero(counted).squeeze(1).tolist()[:12]:
        without = counted.clone()
        without[row] = False
        ref = PersonalHistory(data, without, window=500, decay=0.9)
        t = ph.row_start[row] + torch.arange(1, int(data.lengths[row]))
        p, mass = ref.target_probs(t, ph.event_user[t], first=False)
        torch.testing.assert_close(loo[t][:, [CO, CA]], p[:, [CO, CA]], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loo_mass[t][:, [CO, CA]], mass[:, [CO, CA]], rtol=1e-5, atol=1e-5)


def test_leave_one_out_and_first_item():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=500, decay=0.9)
    # training target event 10 (item 2) after item 1: 1->2 has 3 of 4; its own transition is left out
    p, mass = ph.target_probs(torch.tensor([10]), torch.tensor([0]), first=False, leave_one_out=True)
    assert p[0, G] == pytest.approx(2 / 3) and mass[0, G] == 3
    p, _ = ph.target_probs(torch.tensor([10]), torch.tensor([0]), first=False)
    assert p[0, G] == pytest.approx(3 / 4)
    # first item of session 3 (event 8, item 3) after item 2: 2->3 is its own and only between count
    p, mass = ph.target_probs(torch.tensor([8]), torch.tensor([0]), first=True, leave_one_out=True)
    assert p[0, G] == 0 and mass[0, G] == 0
    # a user's very first event has no history at all
    p, mass = ph.target_probs(torch.tensor([13]), torch.tensor([1]), first=True)
    assert p.abs().sum() == 0 and mass.abs().sum() == 0


def test_window_truncates_history():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=3, decay=0.9)
    # events 11, 10, 9 only: the one transition from 2 inside the window is 10->11 (2->2)
    p, mass = ph.target_probs(torch.tensor([12, 12]), torch.tensor([0, 0]), first=False,
                              targets=torch.tensor([3, 2]))
    assert p[:, U].tolist() == [0.0, 1.0] and mass[0, U] == 1
    assert p[1, D] == pytest.approx((1 + 0.9) / (1 + 0.9 + 0.81))


def test_no_event_sees_itself_or_later():
    data = _data()
    ph = PersonalHistory(data, ~data.is_test, window=500, decay=0.9)
    # item 4 first appears at event 13 (user 1's first event) and item 3 at event 2 (user 0)
    p, _ = ph.target_probs(torch.tensor([2]), torch.tensor([0]), first=False)
    assert p[0, D] == 0 and p[0, R] == 0 and p[0, U] == 0
    # dense rows agree with target_probs for every event, and padding never has mass
    every = torch.arange(ph.n_events)
    p, mass = ph.target_probs(every, ph.event_user, first=False)
    dense, dmass = ph.dense(every, ph.event_user, first=False, n_columns=data.n_items + 1)
    torch.testing.assert_close(dense.gather(2, ph.flat[:, None, None].expand(-1, len(COMPONENTS), 1))[..., 0], p)
    torch.testing.assert_close(dmass, mass)
    assert dense[:, :, 0].abs().sum() == 0
    sums = dense.sum(2)
    torch.testing.assert_close(sums, (mass > 0).float())


def test_gate_starts_at_its_initial_weights_and_renormalises():
    gate = MixtureGate(4, NEXT_INIT)
    mass = torch.tensor([[3.0, 2.0, 2.0, 1.0, 2.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 5.0]])
    pi = gate(torch.randn(2, 4), mass).exp()
    init = torch.tensor(NEXT_INIT)
    torch.testing.assert_close(pi[0], init / init.sum())
    expected = torch.tensor([init[0], 0, 0, 0, 0, 0, init[6], init[7]])
    torch.testing.assert_close(pi[1], expected / expected.sum())


def test_mixture_log_prob_and_probs_by_hand():
    log_pi = torch.log(torch.tensor([[0.5, 0.2, 0.0, 0.0, 0.1, 0.1, 0.05, 0.05]]))
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax over items 1, 2 = (1/4, 3/4)
    comps = torch.zeros(1, len(COMPONENTS), 3)
    comps[0, G, 1] = 1.0
    comps[0, D, 1:] = torch.tensor([0.4, 0.6])
    probs = mixture_probs(log_pi, logits, comps)
    expected_1 = 0.5 * 0.25 + 0.2 * 1.0 + 0.05 * 0.4
    expected_2 = 0.5 * 0.75 + 0.05 * 0.6
    torch.testing.assert_close(probs, torch.tensor([[0.0, expected_1, expected_2]]))
    lp = mixture_log_prob(log_pi, torch.log_softmax(logits, 1)[:, 1], comps[:, :, 2])
    assert float(lp) == pytest.approx(math.log(expected_2 + 1e-8), rel=1e-6)


def test_model_scores_are_the_mixture():
    torch.manual_seed(0)
    m = HierarchicalGRU(n_items=5, n_users=2, hidden=6, dropout=0.0, mixture=True).eval()
    states = torch.randn(3, 6)
    comps = torch.rand(3, len(COMPONENTS), 6)
    comps[:, :, 0] = 0
    comps = comps / comps.sum(2, keepdim=True)
    mass = torch.ones(3, len(COMPONENTS))
    scores = m.next_scores(states, comps, mass)
    init = torch.tensor(NEXT_INIT) / sum(NEXT_INIT)
    expected = init[0] * torch.softmax(m.out(states), 1) + torch.einsum("k,tkn->tn", init[1:], comps[:, :, 1:])
    torch.testing.assert_close(scores[:, 1:], expected)
    assert torch.isinf(scores[:, 0]).all()


def _cfg(**kw):
    base = {"item_embedding": 8, "epochs": 2, "batch_size": 3, "device": "cpu", "history_sessions": 4,
            "n_gap_buckets": 20, "mixture": True, "personal_window": 50, "lr_schedule": "constant"}
    return config_for("lastfm", kw.pop("model", "thrnn"), **{**base, **kw})


@pytest.mark.parametrize("model", ["thrnn", "hrnn", "gru4rec"])
def test_mixture_models_train_resume_and_rank(tmp_path, model):
    split = tiny_split(n_users=5, n_items=9, seed=3, max_sessions=10)
    data = load_sessions(split)
    full = train_sessions(data, tmp_path / "full", _cfg(model=model), progress=False)
    assert all(math.isfinite(e["loss"]) for e in full["epochs"])
    train_sessions(data, tmp_path / "part", _cfg(model=model, epochs=1), progress=False)
    train_sessions(data, tmp_path / "part", _cfg(model=model), progress=False, resume=True)
    a, cfg = load_run(tmp_path / "full")
    b, _ = load_run(tmp_path / "part")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    pred = predict_test(a, split, cfg)
    assert pred.next_item_ranks.min() >= 1 and pred.next_item_ranks.max() <= data.n_items
    assert (pred.first_item_ranks is not None) == (model == "thrnn")


def test_mixture_recommendations_are_the_first_item_mixture_after_all_history(tmp_path):
    split = tiny_split(n_users=4, n_items=9, seed=4, max_sessions=8)
    data = load_sessions(split)
    train_sessions(data, tmp_path, _cfg(epochs=1), progress=False)
    model, cfg = load_run(tmp_path)
    run_date = (split.test["event_time"].max() + __import__("pandas").Timedelta(days=1)).date()
    recs, _ = score_users(model, split, cfg, run_date=run_date, top_k=3)
    everything = torch.ones(data.n_sessions, dtype=torch.bool)
    ph = PersonalHistory(data, everything, window=cfg.personal_window, decay=cfg.decay)
    from thrnn.inference import replay

    r = replay(model, data, cfg, everything, torch.zeros_like(everything), personal=ph)
    users = torch.arange(data.n_users)
    with torch.no_grad():
        h = model.inter_state(users, *r.state.get(users), counts_cpu=r.state.counts_cpu[users])
        comps, mass = ph.dense(ph.user_end, users, first=True, n_columns=model.n_items + 1)
        scores = model.first_scores(h, comps, mass)
    top = torch.topk(scores, 3)
    for u, grp in recs.groupby("user_id"):
        assert grp["item_id"].tolist() == (top.indices[u]).tolist()
        torch.testing.assert_close(torch.tensor(grp["score"].to_numpy()), top.values[u])
