"""End-to-end runs of ``jobs.sessionize.run`` on small hand-made inputs with hand-worked outputs.

Covers the output layout and types, every malformed-input kind, the run-date cut-off, input order for
ties across files, gzip input, the bad-fraction gate, atomic replacement and re-run equality.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from contract import columns as C
from jobs import schemas as S
from jobs.sessionize import SessionizeError, run
from jobs.sessionize.io import InputError
from tests.jobs.conftest import BAD_REASONS, FILE0, FILE1, expected_stats
from thrnn.io import read_split

pytestmark = pytest.mark.spark



def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def lastfm_inputs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("lastfm-in")
    first = d / "b_first.tsv.gz"
    first.write_bytes(gzip.compress(b"\n".join(FILE0) + b"\n"))
    second = d / "a_second.tsv"
    second.write_bytes(b"\n".join(FILE1) + b"\n")
    return [str(first), str(second)]


@pytest.fixture(scope="module")
def lastfm_run(spark, lastfm_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("lastfm-out") / "lastfm"
    stats = run(spark, "lastfm", lastfm_inputs, out, run_date="2009-01-04", max_bad_fraction=0.5)
    return out, stats


def expected_events():
    a0, a1, a2 = None, 17820.0, 68340.0  # 05:00 - 00:03; Jan 2 00:00 - Jan 1 05:01
    b0, b1, b2 = None, 7201.0, 165540.0  # 02:00:01 - 00:00:00; Jan 3 00:00 - Jan 1 02:01
    # item ids by first appearance (time, then file and line): m-x 1, m-z 2, m-y 3, Solo Artist 4
    train = [
        (0, 0, 0, 0, 1, ts("2009-01-01T00:00:00"), a0, False),
        (0, 0, 0, 1, 4, ts("2009-01-01T00:03:00"), a0, False),
        (0, 1, 1, 0, 1, ts("2009-01-01T05:00:00"), a1, False),
        (0, 1, 1, 1, 3, ts("2009-01-01T05:01:00"), a1, False),
        (1, 3, 0, 0, 2, ts("2009-01-01T00:00:00"), b0, False),
        (1, 3, 0, 1, 3, ts("2009-01-01T00:00:00"), b0, False),
        (1, 4, 1, 0, 1, ts("2009-01-01T02:00:01"), b1, False),
        (1, 4, 1, 1, 2, ts("2009-01-01T02:01:00"), b1, False),
    ]
    test = [
        (0, 2, 2, 0, 3, ts("2009-01-02T00:00:00"), a2, False),
        (0, 2, 2, 1, 1, ts("2009-01-02T00:02:00"), a2, False),
        (1, 5, 2, 0, 2, ts("2009-01-03T00:00:00"), b2, False),
        (1, 5, 2, 1, 3, ts("2009-01-03T00:01:00"), b2, False),
    ]
    return train, test


def read(spark, path: Path):
    return spark.read.parquet(str(path))


def test_lastfm_golden_tables(spark, lastfm_run, lastfm_inputs):
    out, _ = lastfm_run
    train, test = expected_events()
    for name, rows in ((C.TRAIN_DIR, train), (C.TEST_DIR, test)):
        got = read(spark, out / name)
        assertSchemaEqual(got.schema, S.EVENT_SCHEMA, ignoreNullable=True)
        assertDataFrameEqual(got, spark.createDataFrame(rows, S.EVENT_SCHEMA), checkRowOrder=True)
    items = [(1, "m-x", "X", 3), (2, "m-z", "Z", 2), (3, "m-y", "Y", 2), (4, "Solo Artist", "Solo Artist", 1)]
    assertDataFrameEqual(read(spark, out / C.ITEMS_DIR), spark.createDataFrame(items, S.ITEM_SCHEMA), checkRowOrder=True)
    users = [(0, "user_a"), (1, "user_b")]
    assertDataFrameEqual(read(spark, out / C.USERS_DIR), spark.createDataFrame(users, S.USER_SCHEMA), checkRowOrder=True)
    source = str(Path(lastfm_inputs[0]).absolute())
    quarantine = [(source, 7 + k, FILE0[6 + k].decode("utf-8", "replace"), r) for k, r in enumerate(BAD_REASONS)]
    assertDataFrameEqual(
        read(spark, out / C.QUARANTINE_DIR), spark.createDataFrame(quarantine, S.QUARANTINE_SCHEMA), checkRowOrder=True
    )  # fmt: skip
    # Nothing but the layout of docs/design.md §3.3 is left in the folder (no staging or work folders
    # beside it).
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [C.TRAIN_DIR, C.TEST_DIR, C.ITEMS_DIR, C.USERS_DIR, C.QUARANTINE_DIR, C.STATS_FILE]
    )
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_lastfm_stats_add_up(lastfm_run):
    out, stats = lastfm_run
    expected = expected_stats()
    assert {k: stats[k] for k in C.STATS_KEYS} == expected
    assert stats["quarantine_reasons"] == {
        "invalid_utf8": 1, "wrong_column_count": 1, "empty_user": 1, "empty_item": 1,
        "control_character": 0, "unparsable_timestamp": 1, "non_finite_timestamp": 0,
        "negative_timestamp": 1, "timestamp_out_of_range": 0,
    }  # fmt: skip
    assert stats["format"] == "lastfm" and stats["session_gap_seconds"] == 3600.0
    assert stats["run_date"] == "2009-01-04"
    on_disk = json.loads((out / C.STATS_FILE).read_text())
    assert {k: on_disk[k] for k in C.STATS_KEYS} == expected


def test_output_is_readable_by_thrnn_io(lastfm_run):
    out, _ = lastfm_run
    split = read_split(out)
    assert (split.n_users, split.n_items) == (2, 4)
    assert str(split.train[C.EVENT_TIME].dtype) == "datetime64[us, UTC]"
    table = pq.read_table(out / C.TRAIN_DIR)
    assert table.schema.field(C.POSITION).type == "int16"
    assert split.train[C.SESSION_ID].tolist() == [0, 0, 1, 1, 3, 3, 4, 4]


def test_rerun_is_identical_and_failed_run_keeps_previous_output(spark, lastfm_run, lastfm_inputs, tmp_path):
    out, stats = lastfm_run
    before = {name: read(spark, out / name).collect() for name in (C.TRAIN_DIR, C.TEST_DIR, C.ITEMS_DIR, C.USERS_DIR)}
    again = run(spark, "lastfm", lastfm_inputs, out, run_date="2009-01-04", max_bad_fraction=0.5)
    for name, rows in before.items():
        assertDataFrameEqual(read(spark, out / name), rows, checkRowOrder=True)
    assert {k: again[k] for k in C.STATS_KEYS} == {k: stats[k] for k in C.STATS_KEYS}

    # 6 of 20 rows are bad: above the default 1 % the job fails, names counts and reasons, and the
    # previous output stays in place with no staging folder left behind.
    with pytest.raises(SessionizeError, match=r"6 of 20 rows \(30\.00%\).*invalid_utf8.*first ones") as err:
        run(spark, "lastfm", lastfm_inputs, out, run_date="2009-01-04")
    assert "b_first.tsv.gz:7 wrong_column_count" in str(err.value)
    for name, rows in before.items():
        assertDataFrameEqual(read(spark, out / name), rows, checkRowOrder=True)
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_reddit_format_header_and_numeric_time_checks(spark, tmp_path):
    lines = [
        "username,subreddit,utc",
        "alice,python,1000.0",
        "alice,rust,1100.5",
        "alice,python,5000",  # gap 3899.5 > 1800: new session
        "alice,golang,5100",
        "alice,python,9000",
        "alice,rust,9000",
        "bob,python,nan",
        "bob,python,inf",
        "bob,python,-5",
        "bob,python,1e300",
        "bob,python,noon",
        "bob,python",
        "bob,,100",
    ]
    src = tmp_path / "reddit.csv"
    src.write_text("\n".join(lines) + "\n")
    stats = run(spark, "reddit", [str(src)], tmp_path / "out", max_bad_fraction=1.0)
    assert stats["session_gap_seconds"] == 1800.0
    assert (stats["raw_rows"], stats["quarantined_rows"], stats["events"], stats["sessions"]) == (13, 7, 6, 3)
    assert {k: v for k, v in stats["quarantine_reasons"].items() if v} == {
        "non_finite_timestamp": 2, "negative_timestamp": 1, "timestamp_out_of_range": 1,
        "unparsable_timestamp": 1, "wrong_column_count": 1, "empty_item": 1,
    }  # fmt: skip
    split = read_split(tmp_path / "out")
    assert split.items[C.ITEM_KEY].tolist() == ["python", "rust", "golang"]
    assert split.train[C.GAP_BEFORE_SECONDS].tolist()[2:] == [3899.5, 3899.5]
    assert split.train[C.EVENT_TIME].iloc[1] == dt.datetime(1970, 1, 1, 0, 18, 20, 500000, tzinfo=dt.UTC)
    q = read(spark, tmp_path / "out" / C.QUARANTINE_DIR).orderBy(C.LINE_NUMBER)
    assert [r[C.LINE_NUMBER] for r in q.collect()] == list(range(8, 15))  # header is line 1

    bad = tmp_path / "bad.csv"
    bad.write_text("user,sub,time\nalice,python,1000\n")
    with pytest.raises(InputError, match="header"):
        run(spark, "reddit", [str(bad)], tmp_path / "out2")


def test_events_csv_and_parquet_give_identical_splits(spark, tmp_path):
    # Three users, 3 sessions each; CSV with a header, quotes, extra columns, ISO and epoch times.
    rows = []
    for u in range(3):
        for s in range(3):
            for k in range(2 + u):
                t = 86400 * s + 60 * k + u
                rows.append((f"item{(u + s + k) % 4}", f"u{u}", t, f"name {(u + s + k) % 4}"))
    header = "what,who,at,label"
    lines = [header] + [
        f'"{i}",{w},{dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t % 2 else t},"{n}"'
        for i, w, t, n in rows
    ]
    csv = tmp_path / "events.csv"
    csv.write_text("\n".join(lines) + "\n")
    opts = dict(user_col="who", item_col="what", time_col="at", item_name_col="label")
    stats_csv = run(spark, "events", [str(csv)], tmp_path / "from_csv", **opts)
    pq_path = tmp_path / "events.parquet"
    spark.createDataFrame(
        [(i, w, dt.datetime.fromtimestamp(t, dt.UTC), n) for i, w, t, n in rows],
        "what string, who string, at timestamp, label string",
    ).coalesce(1).write.parquet(str(pq_path))
    stats_pq = run(spark, "events", [str(pq_path)], tmp_path / "from_parquet", **opts)
    assert {k: stats_csv[k] for k in C.STATS_KEYS} == {k: stats_pq[k] for k in C.STATS_KEYS}
    assert (stats_csv["users"], stats_csv["sessions"], stats_csv["events"]) == (3, 9, 27)
    for name in (C.TRAIN_DIR, C.TEST_DIR, C.ITEMS_DIR, C.USERS_DIR):
        assertDataFrameEqual(read(spark, tmp_path / "from_csv" / name), read(spark, tmp_path / "from_parquet" / name),
                             checkRowOrder=True)  # fmt: skip
    items = read_split(tmp_path / "from_csv").items
    assert items[C.ITEM_NAME].tolist() == [f"name {k.removeprefix('item')}" for k in items[C.ITEM_KEY]]

    with pytest.raises(InputError, match="user column 'nobody'"):
        run(spark, "events", [str(csv)], tmp_path / "x", user_col="nobody", item_col="what", time_col="at")
    with pytest.raises(ValueError, match="events format only"):
        run(spark, "lastfm", [str(csv)], tmp_path / "x", user_col="who")
