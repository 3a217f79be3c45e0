"""Fuzzed raw rows for every input format of the sessionize job: nothing is lost, every bad row is named.

Each hypothesis example is a batch of small input files of one format (Last.fm TSV, Reddit CSV, events
CSV, events Parquet with text times, events Parquet with numeric times) mixing valid rows and junk:
bad and out-of-range times, missing fields, empty or blank keys, control characters, invalid UTF-8,
huge and negative numbers, NaN and infinity, non-ASCII keys, empty files. The batch is sessionized in
ONE run of the job (a Spark run costs seconds, a file costs nothing), and every row of every file
carries its own expectation (valid, or quarantined), so a file is one fuzzed case and the run checks
all of them: the quarantine holds exactly the expected (file, line) pairs, each with a known reason,
and ``stats.json`` accounts for every raw row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import columns as C
from contract.constants import MAX_EPOCH_SECONDS, REASONS
from jobs.sessionize import run

pytestmark = [pytest.mark.spark]

RUN_DATE = dt.date(2009, 1, 31)
EPOCH_2009 = 1_230_768_000  # 2009-01-01T00:00:00Z
FORMATS = ("lastfm", "reddit", "events-csv", "events-parquet", "events-parquet-typed")


@dataclass
class Row:
    fields: list  # str | float | None per column (None: a missing Parquet value)
    ok: bool  # expected not quarantined (valid; it may still be left out as after the run date)
    raw: bytes | None = None  # a text line given as bytes (invalid UTF-8, wrong column count)


# --- keys: (text, kind) with kind good / blank / control ---------------------------------------------
_LETTERS = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6)  # non-ASCII too
# C0 controls but tab; line feed and carriage return end a text line, so Parquet only
_CONTROL_TEXT = st.sampled_from([chr(c) for c in range(32) if c not in (9, 10, 13)])
_CONTROL_ANY = st.sampled_from([chr(c) for c in range(32) if c != 9])


def _keys(text_line: bool) -> st.SearchStrategy[tuple[str, str]]:
    control = _CONTROL_TEXT if text_line else _CONTROL_ANY
    return st.one_of(
        _LETTERS.map(lambda k: (k, "good")),
        st.sampled_from(["", " ", "   "]).map(lambda k: (k, "blank")),
        st.tuples(st.text(string.ascii_letters, max_size=3), control, st.text(string.ascii_letters, max_size=3))
        .map(lambda t: ("".join(t), "control")),
    )


# --- times: (text, ok) -------------------------------------------------------------------------------
def _epoch_ok(x: float) -> bool:
    return math.isfinite(x) and 0 <= x <= MAX_EPOCH_SECONDS


_NEAR = st.integers(EPOCH_2009, EPOCH_2009 + 60 * 86400)  # before and after the run date
_EPOCH = st.one_of(
    _NEAR.map(lambda s: (str(s), True)),
    _NEAR.map(lambda s: (f"{s}.5", True)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: (repr(x), _epoch_ok(x))),
    st.integers(-(10**25), 10**25).map(lambda n: (str(n), 0 <= n <= MAX_EPOCH_SECONDS)),
)
_ISO = st.datetimes(dt.datetime(2009, 1, 1), dt.datetime(2009, 3, 1)).map(
    lambda d: (d.strftime("%Y-%m-%dT%H:%M:%SZ"), True))
_BAD_TIME = st.one_of(
    st.text(string.ascii_letters, max_size=8).map(lambda t: (t, False)),  # no number, no date
    st.sampled_from(["2009-13-45T25:61:00Z", "1969-07-20T20:17:40Z", "1900-01-01T00:00:00Z",
                     "05/04/2009 23:08", "2009-01-05", "- 5", "1.2.3"]).map(lambda t: (t, False)),
)
_LASTFM_TIME = st.one_of(_ISO, _BAD_TIME, _NEAR.map(lambda s: (str(s), False)))  # ISO only
_REDDIT_TIME = st.one_of(_EPOCH, _BAD_TIME, _ISO.map(lambda t: (t[0], False)))  # epoch only
_EVENTS_TIME = st.one_of(_EPOCH, _BAD_TIME, _ISO)  # either


def _quote(key: tuple[str, str]) -> st.SearchStrategy[tuple[str, str]]:
    """The events reader strips one pair of double quotes: a quoted key is the same key."""
    return st.sampled_from([key, (f'"{key[0]}"', key[1])])


@st.composite
def _lastfm_row(draw) -> Row:
    (user, u), (mbid, m), (name, n) = draw(_keys(True)), draw(_keys(True)), draw(_keys(True))
    time, t_ok = draw(_LASTFM_TIME)
    tail = draw(st.lists(st.text(st.characters(exclude_characters="\t\n\r"), max_size=4), min_size=2, max_size=2))
    # the artist name stands in for an empty MBID; any control character in a key or the name is bad
    item_ok = m == "good" or (m == "blank" and n == "good")
    ok = u == "good" and t_ok and item_ok and n != "control"
    return Row([user, time, mbid, name, *tail], ok)


@st.composite
def _csv_row(draw, reddit: bool) -> Row:
    (user, u), (item, i) = draw(_keys(True)), draw(_keys(True))
    if not reddit:
        user, u = draw(_quote((user, u)))
        item, i = draw(_quote((item, i)))
    time, t_ok = draw(_REDDIT_TIME if reddit else _EVENTS_TIME)
    return Row([user, item, time], u == "good" and i == "good" and t_ok)


def _mangled(row: st.SearchStrategy[Row], sep: str) -> st.SearchStrategy[Row]:
    """A text row, sometimes broken as a whole line: a field more or less, invalid UTF-8, empty."""

    def line(r: Row) -> bytes:
        return sep.join(r.fields).encode()

    return st.one_of(
        row,
        row.map(lambda r: Row(r.fields, False, sep.join(r.fields[:-1]).encode())),
        row.map(lambda r: Row(r.fields, False, line(r) + sep.encode() + b"extra")),
        st.tuples(row, st.sampled_from([b"\xff", b"\xc3\x28", b"\x80"])).map(
            lambda t: Row(t[0].fields, False, line(t[0])[:1] + t[1] + line(t[0])[1:])),
        st.sampled_from([b"", b"   "]).map(lambda b: Row([], False, b)),
    )


@st.composite
def _parquet_row(draw, typed: bool) -> Row:
    (user, u), (item, i) = draw(_keys(False)), draw(_keys(False))
    if typed:
        time = draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                              _NEAR.map(float)))
        t_ok = time is not None and _epoch_ok(time)
    else:
        time, t_ok = draw(st.one_of(_EVENTS_TIME, st.just((None, False))))
    # a null key is a missing field
    if draw(st.booleans()) and draw(st.booleans()):
        user, u = None, "blank"
    if draw(st.booleans()) and draw(st.booleans()):
        item, i = None, "blank"
    return Row([user, item, time], u == "good" and i == "good" and t_ok)


def _row_strategy(fmt: str) -> st.SearchStrategy[Row]:
    return {
        "lastfm": _mangled(_lastfm_row(), "\t"),
        "reddit": _mangled(_csv_row(True), ","),
        "events-csv": _mangled(_csv_row(False), ","),
        "events-parquet": _parquet_row(False),
        "events-parquet-typed": _parquet_row(True),
    }[fmt]


# one user with three sessions of two events before the run date: the night has something to publish
def _core_rows(fmt: str) -> list[Row]:
    times = [EPOCH_2009 + 86400 * day + 60 * k for day in (1, 2, 3) for k in (0, 1)]
    items = ["core-a", "core-b"] * 3
    if fmt == "lastfm":
        return [Row(["core-user", dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), i, i, "", ""],
                    True) for t, i in zip(times, items, strict=True)]
    if fmt == "events-parquet-typed":
        return [Row(["core-user", i, float(t)], True) for t, i in zip(times, items, strict=True)]
    return [Row(["core-user", i, str(t)], True) for t, i in zip(times, items, strict=True)]


def _seconds(fmt: str, row: Row) -> float:
    """Event time of a valid row, as the job reads it."""
    text = row.fields[1 if fmt == "lastfm" else 2]
    if isinstance(text, float):
        return text
    try:
        return float(text)
    except ValueError:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _write(fmt: str, rows: list[Row], path: Path) -> None:
    if fmt.startswith("events-parquet"):
        time_type = pa.float64() if fmt == "events-parquet-typed" else pa.string()
        # an extra column the reader ignores (schema drift that is accepted)
        schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", time_type),
                            ("extra", pa.int64())])
        columns = list(zip(*(r.fields for r in rows), strict=True)) if rows else [[], [], []]
        pq.write_table(pa.table([*(list(c) for c in columns), list(range(len(rows)))], schema=schema), path)
        return
    sep = "\t" if fmt == "lastfm" else ","
    header = {"lastfm": [], "reddit": [b"username,subreddit,utc"], "events-csv": [b"user_id,item_id,timestamp"]}[fmt]
    lines = header + [r.raw if r.raw is not None else sep.join(r.fields).encode() for r in rows]
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _run_batch(spark, fmt: str, files: list[list[Row]], folder: Path) -> None:
    suffix = {"lastfm": ".tsv", "reddit": ".csv", "events-csv": ".csv"}.get(fmt, ".parquet")
    batch = [_core_rows(fmt), *files]
    paths = []
    for n, rows in enumerate(batch):
        paths.append(folder / f"in-{n:02d}{suffix}")
        _write(fmt, rows, paths[-1])
    job_format = "events" if fmt.startswith("events") else fmt
    out = folder / "out"
    stats = run(spark, job_format, [str(p) for p in paths], out, run_date=RUN_DATE, max_bad_fraction=1.0)

    # the quarantine holds exactly the rows expected bad, by (file, line), each with a known reason
    first_line = 2 if fmt in ("reddit", "events-csv") else 1  # line 1 of a CSV is its header
    expected_bad = {(str(p), first_line + k) for p, rows in zip(paths, batch, strict=True)
                    for k, r in enumerate(rows) if not r.ok}
    quarantine = pd.read_parquet(out / C.QUARANTINE_DIR)
    got_bad = set(zip(quarantine[C.SOURCE_FILE], quarantine[C.LINE_NUMBER].astype(int), strict=True))
    assert got_bad == expected_bad, (sorted(got_bad - expected_bad)[:5], sorted(expected_bad - got_bad)[:5])
    assert len(quarantine) == len(got_bad)  # one row per bad line, never twice
    assert quarantine[C.REASON].isin(REASONS).all() and quarantine[C.RAW_RECORD].notna().all()

    # stats.json: every raw row is kept, removed by a named rule, after the run date or quarantined
    raw_rows = sum(len(rows) for rows in batch)
    on_disk = json.loads((out / C.STATS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(stats, default=str))
    assert stats["raw_rows"] == raw_rows
    assert stats["quarantined_rows"] == len(expected_bad) == sum(stats["quarantine_reasons"].values())
    assert stats["quarantine_reasons"] == {r: int((quarantine[C.REASON] == r).sum()) for r in REASONS}
    end_us = int(dt.datetime.combine(RUN_DATE + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()) * 10**6
    after = sum(math.floor(_seconds(fmt, r) * 1e6 + 0.5) >= end_us for rows in batch for r in rows if r.ok)
    assert stats["excluded_after_run_date"] == after
    assert stats["valid_rows"] == raw_rows - len(expected_bad) - stats["excluded_after_run_date"]
    assert stats["events"] + sum(stats["events_removed_by_rule"].values()) == stats["valid_rows"]
    assert stats["accounting_ok"] is True
    events = pd.concat([pd.read_parquet(out / C.TRAIN_DIR), pd.read_parquet(out / C.TEST_DIR)])
    assert len(events) == stats["events"] == stats["train_events"] + stats["test_events"]
    assert stats["events"] >= 6  # the core user's sessions survive whatever the junk around them
    end = pd.Timestamp(RUN_DATE + dt.timedelta(days=1), tz="UTC")
    assert (pd.to_datetime(events[C.EVENT_TIME], utc=True) < end).all()
    keys = [*pd.read_parquet(out / C.USERS_DIR)[C.USER_KEY], *pd.read_parquet(out / C.ITEMS_DIR)[C.ITEM_KEY]]
    assert not any(ch < " " and ch != "\t" for key in keys for ch in key)


# Few examples: each is one Spark run (seconds); the files of one example are the fuzzed cases.
FUZZ = settings(max_examples=2, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzzed_rows_are_all_accounted_for(spark, tmp_path_factory, fmt):
    rows = st.lists(_row_strategy(fmt), min_size=0, max_size=12)

    @FUZZ
    @given(files=st.lists(rows, min_size=4, max_size=10))
    def check(files: list[list[Row]]) -> None:
        _run_batch(spark, fmt, files, tmp_path_factory.mktemp(f"fuzz-{fmt}"))

    check()
