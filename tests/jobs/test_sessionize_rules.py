"""Hand-worked golden cases for every rule of docs/design.md §3 and its boundaries, checked on the pure
transform.

One Spark job labels all golden users at once; the expected rows are written out from the rules (times
in seconds, gap threshold 3600 s, L = 20) and compared as a whole DataFrame.
"""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from contract import columns as C
from jobs import schemas as S
from jobs.sessionize import transforms as T

pytestmark = pytest.mark.spark

US = 1_000_000
INPUT_DDL = f"{S.USER_KEY_RAW} string, {S.ITEM_KEY_RAW} string, {S.TS_US} long, {S.SEQ} long"
LABELED_DDL = (
    f"{S.USER_KEY_RAW} string, {S.ITEM_KEY_RAW} string, {S.TS_US} long, {S.SEQ} long, "
    f"{T.RAW_SESSION} int, {T.RAW_POSITION} int, {T.FATE} string, {C.SESSION_INDEX} int, {C.POSITION} short, "
    f"{C.IS_CONTINUATION} boolean, {C.GAP_BEFORE_SECONDS} double, {T.N_SESSIONS} int, {T.IS_TRAIN} boolean"
)


class Golden:
    """Collects input events and the labeled rows expected for them."""

    def __init__(self) -> None:
        self.inputs: list[tuple] = []
        self.expected: list[tuple] = []
        self._seq = 0

    def event(self, user, item, t, raw_session, fate, sidx=None, pos=None, cont=None, gap=None, n=None,
              train=None, seq=None, raw_pos=None):  # fmt: skip
        if seq is None:
            self._seq += 1
            seq = self._seq
        self.inputs.append((user, item, t * US, seq))
        survived = fate in (T.KEPT, T.DROPPED_USER)
        if survived:
            assert None not in (sidx, pos, cont, n)
            raw_pos = pos + (20 if cont else 0)
        elif fate == T.SHORT_SESSION:
            raw_pos = 0
        self.expected.append(
            (user, item, t * US, seq, raw_session, raw_pos, fate, sidx, pos, cont, gap, n,
             train if fate == T.KEPT else None)
        )  # fmt: skip


def golden_cases() -> Golden:
    g = Golden()
    K, R = T.KEPT, T.COLLAPSED_REPEAT

    # Gap exactly at the threshold continues the session; one second more starts a new one.
    # 3 sessions -> floor(0.8 * 3) = 2 train, 1 test.
    u = "gap"
    g.event(u, "A", 0, 0, K, 0, 0, False, None, 3, True)
    g.event(u, "B", 3600, 0, K, 0, 1, False, None, 3, True)
    g.event(u, "C", 7201, 1, K, 1, 0, False, 3601.0, 3, True)
    g.event(u, "D", 7300, 1, K, 1, 1, False, 3601.0, 3, True)
    g.event(u, "E", 20000, 2, K, 2, 0, False, 12700.0, 3, False)
    g.event(u, "F", 20010, 2, K, 2, 1, False, 12700.0, 3, False)

    # A A B A A -> A B A; a repeat across a session boundary is not a repeat; the next gap is measured
    # from the last KEPT event (t=30, not the collapsed repeat at t=40).
    u = "repeat"
    g.event(u, "A", 0, 0, K, 0, 0, False, None, 3, True)
    g.event(u, "A", 10, 0, R)
    g.event(u, "B", 20, 0, K, 0, 1, False, None, 3, True)
    g.event(u, "A", 30, 0, K, 0, 2, False, None, 3, True)
    g.event(u, "A", 40, 0, R)
    g.event(u, "A", 10000, 1, K, 1, 0, False, 9970.0, 3, True)
    g.event(u, "C", 10010, 1, K, 1, 1, False, 9970.0, 3, True)
    g.event(u, "C", 20000, 2, K, 2, 0, False, 9990.0, 3, False)
    g.event(u, "D", 20005, 2, K, 2, 1, False, 9990.0, 3, False)

    # Length 40 is kept as two chunks of 20 (the second a continuation with gap 0); length 1 and 41 are
    # dropped; 21 events -> one chunk of 20 plus a dropped trailing chunk of 1. Sessions after rule 4:
    # 0, 1 (continuation), 2 (first 20 of the 21), 3 -> n = 4, floor(3.2) = 3 train.
    u = "lengths"
    for k in range(40):
        chunk, pos = divmod(k, 20)
        g.event(u, f"i{k}", 10 * k, 0, K, chunk, pos, chunk == 1, None if chunk == 0 else 0.0, 4, True)
    g.event(u, "single", 100_000, 1, T.SHORT_SESSION)
    for k in range(41):
        g.event(u, f"j{k}", 200_000 + 10 * k, 2, T.LONG_SESSION, raw_pos=k)
    for k in range(20):  # gap from the last kept event of session 0 (t=390)
        g.event(u, f"k{k}", 400_000 + 10 * k, 3, K, 2, k, False, 400_000.0 - 390, 4, True)
    g.event(u, "k20", 400_200, 3, T.TRAILING_CHUNK, raw_pos=20)
    # Gap measured from the last kept event (t=400190), not the dropped trailing one (t=400200).
    g.event(u, "m0", 500_000, 4, K, 3, 0, False, 500_000.0 - 400_190, 4, False)
    g.event(u, "m1", 500_010, 4, K, 3, 1, False, 500_000.0 - 400_190, 4, False)

    # Exactly 3 sessions, two of them from one split 25-event session: kept (counted after rule 4).
    u = "three_after_split"
    for k in range(25):
        chunk, pos = divmod(k, 20)
        g.event(u, f"p{k}", 10 * k, 0, K, chunk, pos, chunk == 1, None if chunk == 0 else 0.0, 3, True)
    g.event(u, "q0", 100_000, 1, K, 2, 0, False, 100_000.0 - 240, 3, False)
    g.event(u, "q1", 100_001, 1, K, 2, 1, False, 100_000.0 - 240, 3, False)

    # Only 2 sessions after the rules (a third was too short): the user is dropped.
    u = "two_sessions"
    g.event(u, "A", 0, 0, T.DROPPED_USER, 0, 0, False, None, 2)
    g.event(u, "B", 1, 0, T.DROPPED_USER, 0, 1, False, None, 2)
    g.event(u, "A", 10_000, 1, T.SHORT_SESSION)
    g.event(u, "A", 20_000, 2, T.DROPPED_USER, 1, 0, False, 19_999.0, 2)
    g.event(u, "B", 20_001, 2, T.DROPPED_USER, 1, 1, False, 19_999.0, 2)

    # Ties in time keep input order (seq), whatever the row order of the DataFrame; a repeat among
    # tied events collapses like any other.
    u = "ties"
    g.event(u, "A", 0, 0, K, 0, 2, False, None, 3, True, seq=1005)
    g.event(u, "B", 0, 0, K, 0, 0, False, None, 3, True, seq=1003)
    g.event(u, "C", 0, 0, K, 0, 1, False, None, 3, True, seq=1004)
    g.event(u, "D", 5000, 1, R, seq=1011)
    g.event(u, "D", 5000, 1, K, 1, 0, False, 5000.0, 3, True, seq=1010)
    g.event(u, "E", 5000, 1, K, 1, 1, False, 5000.0, 3, True, seq=1012)
    g.event(u, "F", 10_000, 2, K, 2, 0, False, 5000.0, 3, False, seq=1020)
    g.event(u, "G", 10_001, 2, K, 2, 1, False, 5000.0, 3, False, seq=1021)
    return g


def test_every_rule_and_boundary_on_golden_users(spark):
    g = golden_cases()
    events = spark.createDataFrame(g.inputs, INPUT_DDL)
    labeled = T.sessionize(events, T.SessionRules(session_gap_seconds=3600))
    expected = spark.createDataFrame(g.expected, LABELED_DDL)
    assertDataFrameEqual(labeled, expected)


def test_gap_threshold_is_configurable_and_strict(spark):
    # With a 10 s threshold, gaps of 10 s continue and 11 s split; 3 sessions of 2 -> 2 train, 1 test.
    rows = [("u", "A", 0, 1), ("u", "B", 10, 2), ("u", "C", 21, 3), ("u", "D", 31, 4), ("u", "E", 42, 5), ("u", "F", 52, 6)]
    events = spark.createDataFrame([(u, i, t * US, s) for u, i, t, s in rows], INPUT_DDL)
    labeled = T.sessionize(events, T.SessionRules(session_gap_seconds=10))
    got = labeled.select(T.RAW_SESSION, C.SESSION_INDEX, C.GAP_BEFORE_SECONDS, T.IS_TRAIN).orderBy(S.SEQ)
    expected = [(0, 0, None, True), (0, 0, None, True), (1, 1, 11.0, True), (1, 1, 11.0, True), (2, 2, 11.0, False), (2, 2, 11.0, False)]  # fmt: skip
    assertDataFrameEqual(
        got, spark.createDataFrame(expected, "raw_session int, session_index int, gap_before_seconds double, is_train boolean"),
        checkRowOrder=True,
    )  # fmt: skip


def test_rules_reject_nonsense():
    with pytest.raises(ValueError, match="session_gap_seconds"):
        T.SessionRules(session_gap_seconds=0)
    with pytest.raises(ValueError, match="train_fraction"):
        T.SessionRules(train_fraction=1.0)
    with pytest.raises(ValueError, match="column positions"):
        T.TextLayout(delimiter=",", n_columns=2, user_pos=0, item_pos=1, time_pos=2)


@pytest.mark.parametrize("delimiter", ["\t", ",", "|", ".", "\\", "+", "x", "::"])
def test_delimiters_split_literally(spark, delimiter):
    """One-character delimiters are given to Spark's split bare or backslash-escaped (its fast path),
    longer ones quoted: each splits on itself only, regex metacharacters included."""
    d = delimiter
    odd = "a" + "".join(c for c in ".|\\+*x" if c not in d) + "b"  # metacharacters, the delimiter's aside
    lines = [f"ab{d}cd{d}1230768000", f"ab{d}cd", f"{odd}{d}e{d}1230768001", f"ab{d}cd{d}1{d}2"]
    rows = [(0, 0, n, line) for n, line in enumerate(lines)]
    layout = T.TextLayout(delimiter=d, n_columns=3, user_pos=0, item_pos=1, time_pos=2, time_kind="epoch")
    got = T.parse_text_lines(spark.createDataFrame(rows, S.LINE_SCHEMA), layout).orderBy(S.ROW_IN_BLOCK)
    expected = [
        ("ab", "cd", 1230768000 * US, None),
        (None, None, None, T.WRONG_COLUMN_COUNT),
        (odd, "e", 1230768001 * US, None),
        (None, None, None, T.WRONG_COLUMN_COUNT),
    ]
    assert [(r[S.USER_KEY_RAW], r[S.ITEM_KEY_RAW], r[S.TS_US], r[C.REASON]) for r in got.collect()] == expected
