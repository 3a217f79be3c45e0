"""Real data (../shared/data): the Spark job against an independent plain-Python computation of the
rules of docs/design.md §3.

The reference below walks each user's events one by one, exactly as the rules read, and shares no code
with the job. Both the whole event table (keys, ids, times, gaps, flags) and every statistic must agree.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections import defaultdict

import pandas as pd
import pytest

from contract import columns as C
from jobs.sessionize import run
from tests.conftest import shared_file
from thrnn.io import read_split

pytestmark = [pytest.mark.spark, pytest.mark.realdata]

L = 20


def reference(events: list[tuple[str, str, int]], gap_seconds: float, train_fraction: float = 0.8):
    """``events`` = (user, item, time in µs) in input order -> (event table, stats), per the rules of
    docs/design.md §3."""
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for order, (user, item, t) in enumerate(events):
        by_user[user].append((t, order, item))
    gap_us = gap_seconds * 1_000_000
    n = defaultdict(int)
    kept: dict[str, list[tuple[list[tuple[int, int, str]], bool]]] = {}
    for user in sorted(by_user):
        sessions: list[list[tuple[int, int, str]]] = []
        prev = None
        for e in sorted(by_user[user]):  # time, then input order
            if prev is None or e[0] - prev > gap_us:
                sessions.append([])
            sessions[-1].append(e)
            prev = e[0]
        chunks = []
        for s in sessions:
            collapsed = [s[0]]
            for e in s[1:]:
                if e[2] == collapsed[-1][2]:
                    n["collapsed_repeats"] += 1
                else:
                    collapsed.append(e)
            if len(collapsed) < 2:
                n["dropped_short_sessions"] += 1
                continue
            if len(collapsed) > 2 * L:
                n["dropped_long_sessions"] += 1
                n["long_events"] += len(collapsed)
                continue
            for start in range(0, len(collapsed), L):
                part = collapsed[start : start + L]
                if len(part) < 2:
                    n["dropped_trailing_chunks"] += 1
                else:
                    chunks.append((part, start > 0))
        if len(chunks) < 3:
            n["dropped_users"] += 1
            n["dropped_user_events"] += sum(len(p) for p, _ in chunks)
        else:
            kept[user] = chunks

    first_seen: dict[str, tuple[int, int]] = {}
    for chunks in kept.values():
        for part, _ in chunks:
            for t, order, item in part:
                first_seen[item] = min(first_seen.get(item, (t, order)), (t, order))
    item_id = {item: i + 1 for i, item in enumerate(sorted(first_seen, key=first_seen.__getitem__))}
    rows = []
    session_id = 0
    for user_id, user in enumerate(sorted(kept)):
        chunks = kept[user]
        n_train = math.floor(train_fraction * len(chunks))
        prev_end = None
        for s_idx, (part, is_cont) in enumerate(chunks):
            gap = None if prev_end is None else (0.0 if is_cont else (part[0][0] - prev_end) / 1e6)
            for pos, (t, _, item) in enumerate(part):
                rows.append((user, user_id, session_id, s_idx, pos, item, item_id[item], t, gap, is_cont, s_idx < n_train))
            prev_end = part[-1][0]
            session_id += 1
    table = pd.DataFrame(
        rows,
        columns=["user_key", C.USER_ID, C.SESSION_ID, C.SESSION_INDEX, C.POSITION, "item_key", C.ITEM_ID,
                 "t_us", C.GAP_BEFORE_SECONDS, C.IS_CONTINUATION, "is_train"],
    )  # fmt: skip
    train, test = table[table.is_train], table[~table.is_train]
    sessions = table[C.SESSION_ID].nunique()
    stats = {
        "raw_rows": len(events),
        "quarantined_rows": 0,
        "excluded_after_run_date": 0,
        "collapsed_repeats": n["collapsed_repeats"],
        "dropped_short_sessions": n["dropped_short_sessions"],
        "dropped_long_sessions": n["dropped_long_sessions"],
        "dropped_trailing_chunks": n["dropped_trailing_chunks"],
        "dropped_users": n["dropped_users"],
        "users": len(kept),
        "sessions": sessions,
        "events": len(table),
        "items": len(item_id),
        "avg_session_length": len(table) / sessions,
        "sessions_per_user": sessions / len(kept),
        "train_sessions": train[C.SESSION_ID].nunique(),
        "test_sessions": test[C.SESSION_ID].nunique(),
        "train_events": len(train),
        "test_events": len(test),
    }
    return table, stats


def spark_table(out) -> pd.DataFrame:
    split = read_split(out)
    parts = []
    for frame, is_train in ((split.train, True), (split.test, False)):
        frame = frame.assign(is_train=is_train)
        parts.append(frame)
    events = pd.concat(parts, ignore_index=True)
    events = events.merge(split.users, on=C.USER_ID).merge(split.items[[C.ITEM_ID, C.ITEM_KEY]], on=C.ITEM_ID)
    events["t_us"] = events[C.EVENT_TIME].astype("int64")  # datetime64[us] -> µs
    events = events.rename(columns={C.USER_KEY: "user_key", C.ITEM_KEY: "item_key"})
    return events.sort_values([C.USER_ID, C.SESSION_INDEX, C.POSITION]).reset_index(drop=True)


def assert_same(out, stats, ref_table, ref_stats):
    assert {k: stats[k] for k in C.STATS_KEYS} == pytest.approx(ref_stats)
    got = spark_table(out)[ref_table.columns]
    ref = ref_table.astype(got.dtypes.to_dict())
    pd.testing.assert_frame_equal(got, ref)


def read_tsv(path, names):
    return pd.read_csv(path, sep="\t", header=None, names=names, dtype=str, quoting=csv.QUOTE_NONE,
                       keep_default_na=False)  # fmt: skip


def test_lastfm_format_on_user_000001_full_history(spark, tmp_path):
    path = shared_file("lastfm-1k/user_000001_full_history.tsv.gz")
    raw = read_tsv(path, ["user", "time", "mbid", "artist", "track_mbid", "track"])
    to_us = lambda s: int(dt.datetime.fromisoformat(s).timestamp()) * 1_000_000  # noqa: E731
    item = raw["mbid"].where(raw["mbid"] != "", raw["artist"])
    events = list(zip(raw["user"], item, raw["time"].map(to_us), strict=True))
    ref_table, ref_stats = reference(events, 3600)
    stats = run(spark, "lastfm", [str(path)], tmp_path / "out")
    assert_same(tmp_path / "out", stats, ref_table, ref_stats)
    # Display names: the artist name of the item's first listen.
    names = read_split(tmp_path / "out").items.set_index(C.ITEM_KEY)[C.ITEM_NAME]
    assert names["a7f7df4a-77d8-4f12-8acd-5c60c93f4de8"] == "坂本龍一"


@pytest.mark.parametrize(
    ("relative", "gap"),
    [
        ("lastfm-1k-jodie-subset/lastfm_jodie_first10pct.tsv.gz", 3600),
        pytest.param("reddit-jodie-subset/reddit_jodie_first20pct.tsv.gz", 1800, marks=pytest.mark.slow),
    ],
)
def test_events_format_on_jodie_excerpts(spark, tmp_path, relative, gap):
    path = shared_file(relative)
    raw = read_tsv(path, ["user", "item", "t"])
    events = list(zip(raw["user"], raw["item"], raw["t"].map(lambda s: round(float(s) * 1_000_000)), strict=True))
    ref_table, ref_stats = reference(events, gap)
    stats = run(
        spark, "events", [str(path)], tmp_path / "out", session_gap_seconds=gap, delimiter="\t", header=False
    )
    assert_same(tmp_path / "out", stats, ref_table, ref_stats)
