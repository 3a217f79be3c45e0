"""Test-time replay against a per-user reference loop; completeness; no future leakage; unseen items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract import columns as C
from tests.conftest import T0, H, tiny_split
from tests.thrnn.conftest import reference_replay as _reference
from thrnn import time_model as tm
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import load_sessions, read_jodie_tsv, sessionize_frame
from thrnn.inference import predict_test
from thrnn.io import Split, split_from_sessions
from thrnn.train import train_sessions

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A THRNN trained for 2 epochs on a tiny split with continuations, and its split."""
    split = tiny_split(n_users=7, n_items=11, seed=5, max_sessions=22)
    run = tmp_path_factory.mktemp("run")
    cfg = config_for("paper-lastfm", "thrnn", item_embedding=8, epochs=2, batch_size=3, device="cpu",
                     history_sessions=4, n_gap_buckets=20)
    train_sessions(load_sessions(split), run, cfg, progress=False)
    model, cfg = load_run(run)
    return model, cfg, split


def test_predictions_match_a_per_user_reference_loop(trained):
    model, cfg, split = trained
    data = load_sessions(split)
    p = predict_test(model, split, cfg)
    ref_ranks, ref_first, ref_a = _reference(model, cfg, data)
    assert np.array_equal(p.next_item_ranks, ref_ranks)
    assert np.array_equal(p.first_item_ranks, ref_first)
    kw = {"gap_exponent": cfg.gap_exponent, "unit_hours": cfg.time_unit_hours, "cutoff_hours": cfg.time_cutoff_hours}
    w = model.time_head.w.detach().double()
    np.testing.assert_allclose(p.gap_median_hours, tm.median_return_hours(ref_a, w, **kw).numpy(), rtol=1e-5)
    np.testing.assert_allclose(p.gap_mean_hours, tm.expected_return_hours(ref_a, w, **kw)[0].numpy(), rtol=1e-5)


def test_every_test_target_is_evaluated(trained):
    model, cfg, split = trained
    p = predict_test(model, split, cfg)
    sessions = split.test.groupby([C.USER_ID, C.SESSION_INDEX])
    assert len(p.next_item_ranks) == int((sessions.size() - 1).sum())
    assert len(p.first_item_ranks) == sessions.ngroups
    gaps = sessions[C.GAP_BEFORE_SECONDS].first()
    assert len(p.gap_true_hours) == len(p.gap_median_hours) == len(p.gap_mean_hours) == sessions.ngroups
    np.testing.assert_allclose(p.gap_true_hours, gaps.to_numpy() / H)
    assert ((p.next_item_ranks >= 1) & (p.next_item_ranks <= split.n_items)).all()
    assert (p.gap_no_return_prob >= 0).all() and (p.gap_no_return_prob <= 1).all()
    assert (p.gap_median_hours <= cfg.time_cutoff_hours).all()
    # targets in (user, session, position) order
    expected_pos = np.concatenate([np.arange(1, n) for n in sessions.size().to_numpy()])
    assert np.array_equal(p.next_item_positions, expected_pos)


def test_no_future_leakage(trained):
    """Changing a user's later test sessions changes nothing about earlier targets."""
    model, cfg, split = trained
    base = predict_test(model, split, cfg)
    test = split.test.copy()
    last_idx = test.groupby(C.USER_ID)[C.SESSION_INDEX].transform("max")
    later = test[C.SESSION_INDEX] == last_idx
    test.loc[later, C.ITEM_ID] = 1 + (test.loc[later, C.ITEM_ID] % split.n_items)
    changed = predict_test(model, Split(split.train, test, split.items, split.users, {}), cfg)
    keep = np.ones(len(base.next_item_ranks), dtype=bool)
    sess_of_target = np.repeat(test.groupby([C.USER_ID, C.SESSION_INDEX])[C.SESSION_INDEX].first().to_numpy(),
                               test.groupby([C.USER_ID, C.SESSION_INDEX]).size().to_numpy() - 1)
    user_of_target = base.next_item_users
    last_of_user = test.groupby(C.USER_ID)[C.SESSION_INDEX].max()
    keep = sess_of_target < last_of_user.loc[user_of_target].to_numpy()
    assert keep.sum() > 0
    assert np.array_equal(base.next_item_ranks[keep], changed.next_item_ranks[keep])
    assert not np.array_equal(base.next_item_ranks[~keep], changed.next_item_ranks[~keep])


def test_items_only_in_test_are_ranked_and_can_be_masked(tmp_path):
    sessions = {u: [[(1 + (u + s) % 4, T0 + s * 9 * H), (2 + u % 3, T0 + s * 9 * H + 60)] for s in range(5)]
                for u in range(3)}
    sessions[0][-1] = [(1, T0 + 60 * H), (8, T0 + 60 * H + 60)]  # item 8 appears only as a test target
    split = split_from_sessions(sessions)
    cfg = config_for("paper-lastfm", "thrnn", item_embedding=8, epochs=1, device="cpu")
    train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    p = predict_test(model, split, cfg)
    target_8 = p.next_item_ranks[(p.next_item_users == 0)][-1]
    assert 1 <= target_8 <= split.n_items
    masked = predict_test(model, split, cfg.replace(mask_untrained_items=True))
    # -inf for every untrained item: ranked behind all trained items, ties against the model
    n_untrained = int((split.items[C.TRAIN_COUNT] == 0).sum())
    assert masked.next_item_ranks[(masked.next_item_users == 0)][-1] == split.n_items
    assert n_untrained >= 1


def test_hrnn_has_no_time_or_first_item_predictions(tmp_path):
    split = tiny_split()
    cfg = config_for("paper-lastfm", "hrnn", item_embedding=8, epochs=1, device="cpu")
    train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    p = predict_test(model, split, cfg)
    assert p.first_item_ranks is None and p.gap_median_hours is None and p.gap_mean_hours is None
    assert p.gap_no_return_prob is None and len(p.gap_true_hours) > 0
    assert len(p.next_item_ranks) == int((split.test.groupby([C.USER_ID, C.SESSION_INDEX]).size() - 1).sum())


@pytest.mark.realdata
def test_one_epoch_smoke_run_on_the_jodie_excerpt(shared_data, tmp_path):
    ev = read_jodie_tsv(str(shared_data / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz"),
                        max_rows=4000)
    split = Split(*sessionize_frame(ev, 3600), {})
    cfg = config_for("paper-lastfm", "thrnn", epochs=1, device="cpu", threads=1)
    hist = train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    assert np.isfinite(hist["epochs"][0]["loss"]) and hist["epochs"][0]["bad_steps"] == 0
    model, cfg = load_run(tmp_path)
    p = predict_test(model, split, cfg)
    assert len(p.next_item_ranks) == int((split.test.groupby([C.USER_ID, C.SESSION_INDEX]).size() - 1).sum())
    assert np.isfinite(p.gap_median_hours).all() and np.isfinite(p.gap_mean_hours).all()
    # better than chance after one epoch: mean rank well below half the catalogue
    assert p.next_item_ranks.mean() < split.n_items / 2


def test_gap_exponent_trains_on_the_transformed_axis_and_predicts_in_hours(tmp_path):
    split = tiny_split(n_users=5, seed=9)
    data = load_sessions(split)
    cfg = config_for("paper-lastfm", "thrnn", item_embedding=8, epochs=1, device="cpu", gap_exponent=0.5)
    train_sessions(data, tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    assert cfg.gap_exponent == 0.5
    p = predict_test(model, split, cfg)
    _, _, ref_a = _reference(model, cfg, data)
    w = model.time_head.w.detach().double()
    # back-transform: the median in hours solves S(((t / unit) ** 0.5)) = 1/2 on the model axis
    u_med = tm.to_model_time(torch.as_tensor(p.gap_median_hours), 0.5, cfg.time_unit_hours)
    inside = p.gap_median_hours < cfg.time_cutoff_hours
    np.testing.assert_allclose(tm.survival(ref_a, w, u_med).numpy()[inside], 0.5, rtol=1e-6)
    assert (p.gap_mean_hours > 0).all() and (p.gap_mean_hours <= cfg.time_cutoff_hours).all()
