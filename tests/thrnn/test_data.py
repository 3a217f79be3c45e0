"""Session tensors, user-parallel batching, the FIFO of session representations, the pandas sessionizer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from contract import columns as C
from tests.conftest import T0, H, tiny_split
from thrnn.data import (
    HistoryState,
    SessionData,
    load_sessions,
    read_jodie_tsv,
    sessionize_frame,
    user_parallel_batches,
)
from thrnn.io import Split, split_from_sessions

torch.set_num_threads(1)

def test_load_sessions_exact_tensors():
    sessions = {
        0: [[(1, T0), (2, T0 + 60)], [(3, T0 + 5 * H), (1, T0 + 5 * H + 60), (2, T0 + 5 * H + 120)],
            [(2, T0 + 10 * H), (4, T0 + 10 * H + 60)]],
        1: [[(4, T0 + 1), (3, T0 + 61)], [(2, T0 + 2 * H), (1, T0 + 2 * H + 30)],
            [(1, T0 + 2 * H + 60), (4, T0 + 2 * H + 90)], [(3, T0 + 50 * H), (3, T0 + 50 * H + 1)]],
    }
    split = split_from_sessions(sessions, continuations={1: {2}})
    d = load_sessions(split, max_len=4)
    assert d.items.tolist() == [[1, 2, 0, 0], [3, 1, 2, 0], [2, 4, 0, 0],
                                [4, 3, 0, 0], [2, 1, 0, 0], [1, 4, 0, 0], [3, 3, 0, 0]]
    assert d.lengths.tolist() == [2, 3, 2, 2, 2, 2, 2]
    assert d.users.tolist() == [0, 0, 0, 1, 1, 1, 1]
    # floor(0.8 * 3) = 2 and floor(0.8 * 4) = 3 training sessions
    assert d.is_test.tolist() == [False, False, True, False, False, False, True]
    gaps = d.gap_hours.tolist()
    assert math.isnan(gaps[0]) and math.isnan(gaps[3])
    assert gaps[1] == pytest.approx(5 - 1 / 60)
    assert gaps[2] == pytest.approx(10 - 5 - 2 / 60)
    assert gaps[4] == pytest.approx(2 - 61 / H)
    assert gaps[5] == 0.0  # continuation
    assert gaps[6] == pytest.approx(50 - 2 - 90 / H)
    assert d.time_mask.tolist() == [False, True, True, False, True, False, True]
    assert d.end_seconds.tolist() == [T0 + 60, T0 + 5 * H + 120, T0 + 10 * H + 60, T0 + 61,
                                      T0 + 2 * H + 30, T0 + 2 * H + 90, T0 + 50 * H + 1]
    assert (d.n_items, d.n_users) == (4, 2)
    assert d.n_targets() == 8
    # train counts from items/: user 0's sessions 0-1 (1 2 3 1 2), user 1's sessions 0-2 (4 3 2 1 1 4)
    assert d.item_train_count.tolist() == [0, 4, 3, 2, 2]


def test_gap_buckets_uniform_with_first_session_apart():
    d = load_sessions(tiny_split())
    d.gap_hours = torch.tensor([math.nan, 0.0, 0.99, 1.0, 499.9, 500.0, 7000.0], dtype=torch.float64)
    assert d.gap_buckets(500, 500.0).tolist() == [0, 1, 1, 2, 500, 500, 500]
    assert d.gap_buckets(5, 500.0).tolist() == [0, 1, 1, 1, 5, 5, 5]


def test_bad_input_is_rejected_with_a_clear_error():
    split = tiny_split()
    long = split.train.copy()
    with pytest.raises(ValueError, match="more than L"):
        load_sessions(split, max_len=3)
    long.loc[long[C.POSITION] == 1, C.POSITION] = 5
    with pytest.raises(ValueError, match="not 0..len-1"):
        load_sessions(Split(long, split.test, split.items, split.users, {}))
    bad_item = split.train.copy()
    bad_item.loc[0, C.ITEM_ID] = 0
    with pytest.raises(ValueError, match="padding"):
        load_sessions(Split(bad_item, split.test, split.items, split.users, {}))
    short = split.train[~((split.train[C.USER_ID] == 0) & (split.train[C.SESSION_INDEX] == 0)
                          & (split.train[C.POSITION] > 0))]
    with pytest.raises(ValueError, match="at least 2 events"):
        load_sessions(Split(short, split.test, split.items, split.users, {}))


def _data_with_counts(counts: list[int]) -> SessionData:
    sessions = {u: [[(1, T0 + s * 10 * H), (2, T0 + s * 10 * H + 60)] for s in range(n)]
                for u, n in enumerate(counts)}
    return load_sessions(split_from_sessions(sessions))


def test_batches_take_users_with_most_remaining_sessions_exact():
    d = _data_with_counts([3, 1, 2])  # rows: user 0 -> 0,1,2; user 1 -> 3; user 2 -> 4,5
    batches = user_parallel_batches(d, torch.ones(d.n_sessions, dtype=torch.bool), batch_size=2)
    # remaining (3,1,2) -> users 0,2; (2,1,1) -> 0 and the tie 1 vs 2 goes to 1; (1,0,1) -> 0,2
    assert [b.tolist() for b in batches] == [[0, 4], [1, 3], [2, 5]]


def test_batches_never_drop_a_session():
    # one heavy user: the research code stopped when <= batch/2 users remained and skipped its tail
    d = _data_with_counts([40] + [3] * 9)
    mask = ~d.is_test
    batches = user_parallel_batches(d, mask, batch_size=4)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == np.flatnonzero(mask.numpy()).tolist()
    seen_last = {}
    for b in batches:
        users = d.users.numpy()[b]
        assert len(set(users)) == len(users)  # one session per user per batch
        for r, u in zip(b.tolist(), users.tolist(), strict=True):
            assert r > seen_last.get(u, -1)  # each user's sessions in time order
            seen_last[u] = r
    assert len(batches) == 32  # floor(0.8 * 40) sessions of the heavy user: the lower bound


def test_history_state_is_a_fifo_of_the_last_k():
    st = HistoryState(n_users=3, k=2, hidden=1)
    users = torch.tensor([0, 2])
    for step in range(3):
        st.push(users, torch.tensor([[10.0 + step], [20.0 + step]]), torch.tensor([step, step + 5]))
    reps, buckets, counts = st.get(torch.tensor([0, 1, 2]))
    assert reps.squeeze(-1).tolist() == [[11.0, 12.0], [0.0, 0.0], [21.0, 22.0]]
    assert buckets.tolist() == [[1, 2], [0, 0], [6, 7]]
    assert counts.tolist() == [2, 0, 2]
    assert st.counts_cpu.tolist() == [2, 0, 2]


def test_validation_mask_takes_last_training_sessions():
    d = _data_with_counts([5, 3])  # train: 4 and 2 sessions
    assert d.validation_mask(1).tolist() == [False, False, False, True, False,
                                             False, True, False]
    # never the user's only remaining training session
    assert d.validation_mask(3).tolist() == [False, True, True, True, False,
                                             False, True, False]


def test_last_rows_per_user():
    d = _data_with_counts([2, 3])
    assert d.last_rows(torch.ones(d.n_sessions, dtype=torch.bool)).tolist() == [1, 4]
    assert d.last_rows(~d.is_test).tolist() == [0, 3]


def test_sessionize_frame_applies_the_spec_rules():
    rows = []
    # user a: session 1 with a repeat (A A B), a 1-event session, a 22-event session (-> 20 + 2),
    # a 21-event session (-> 20, trailing chunk of 1 dropped)
    t = 0.0
    for item in ["A", "A", "B"]:
        rows.append(("a", item, t))
        t += 60
    t += 7200
    rows.append(("a", "Z", t))
    t += 7200
    for k in range(22):
        rows.append(("a", f"i{k}", t))
        t += 60
    t += 7200
    for k in range(21):
        rows.append(("a", f"j{k}", t))
        t += 60
    rows.append(("b", "A", 0.0))  # user b: only one session -> dropped
    rows.append(("b", "B", 10.0))
    train, test, items, users = sessionize_frame(pd.DataFrame(rows, columns=["user", "item", "time"]), 3600)
    ev = pd.concat([train, test])
    per_session = ev.groupby(C.SESSION_INDEX)[C.ITEM_ID].size().tolist()
    assert per_session == [2, 20, 2, 20]
    assert ev.groupby(C.SESSION_INDEX)[C.IS_CONTINUATION].first().tolist() == [False, False, True, False]
    gaps = ev.groupby(C.SESSION_INDEX)[C.GAP_BEFORE_SECONDS].first().tolist()
    assert math.isnan(gaps[0])
    assert gaps[1] == 60 + 7200 + 7200  # from B's time to the first event of the long session
    assert gaps[2] == 0.0
    assert gaps[3] == 60 + 7200  # from the last kept event (i21) of the 22-event session
    assert len(train[C.SESSION_INDEX].unique()) == 3 and len(test[C.SESSION_INDEX].unique()) == 1
    assert users[C.USER_KEY].tolist() == ["a"]
    assert items[C.ITEM_KEY].tolist()[:2] == ["A", "B"]
    load_sessions(Split(train, test, items, users, {}))  # a valid split


@pytest.mark.realdata
def test_jodie_excerpt_loads_into_sessions(shared_data):
    ev = read_jodie_tsv(str(shared_data / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz"),
                        max_rows=5000)
    d = load_sessions(Split(*sessionize_frame(ev, 3600), {}))
    assert d.n_sessions > 100
    assert bool((d.lengths >= 2).all()) and bool((d.lengths <= 20).all())
    batches = user_parallel_batches(d, ~d.is_test, 100)
    assert sorted(np.concatenate(batches).tolist()) == np.flatnonzero((~d.is_test).numpy()).tolist()
