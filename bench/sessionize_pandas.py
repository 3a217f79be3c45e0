"""Single-process vectorized pandas implementation of the sessionize rules (docs/design.md §2-§3), for
the benchmark.

It is the baseline ``bench/sessionize.py`` measures the Spark job against and must give the same
statistics (``tests/jobs/test_sessionize_bench.py`` checks that). It reads the ``lastfm`` and
``reddit`` formats, quarantines the same malformed kinds, and applies the same rules in the same order;
it writes nothing.

    python bench/sessionize_pandas.py --format lastfm --input var/bench/lastfm_1000000.tsv.gz
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs import columns as C

DEFAULT_GAP_SECONDS = {"lastfm": 3600.0, "reddit": 1800.0}
REASONS = [
    "invalid_utf8",
    "wrong_column_count",
    "empty_user",
    "empty_item",
    "unparsable_timestamp",
    "non_finite_timestamp",
    "negative_timestamp",
    "timestamp_out_of_range",
]
MAX_EPOCH_SECONDS = 253402300799.0
ISO_8601_RE = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?"


def _read_lines(path: str) -> pd.Series:
    """Every line of a (possibly gzipped) text file as one Arrow-backed string; invalid UTF-8 -> U+FFFD."""
    frame = pd.read_csv(
        path, sep="\x1f", header=None, names=["line"], dtype="string[pyarrow]", quoting=csv.QUOTE_NONE,
        na_filter=False, skip_blank_lines=False, encoding_errors="replace", engine="c",
    )  # fmt: skip
    return frame["line"]


def _parse(fmt: str, inputs: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Valid events (user, item, ts_us, seq) of all inputs and the quarantined counts by reason."""
    frames = []
    for file_idx, path in enumerate(inputs):
        lines = _read_lines(path)
        if fmt == "reddit":
            if len(lines) == 0 or lines.iloc[0].lstrip("\ufeff").strip() != "username,subreddit,utc":
                raise ValueError(f"{path}: missing reddit header")
            lines = lines.iloc[1:]
        frames.append(pd.DataFrame({"line": lines.to_numpy(), "seq": np.arange(len(lines)) + file_idx * 2**40}))
    raw = pd.concat(frames, ignore_index=True)
    delim, n_cols = ("\t", 6) if fmt == "lastfm" else (",", 3)
    parts = raw["line"].str.split(delim, expand=True, regex=False)
    n_fields = raw["line"].str.count(delim) + 1

    def col(i: int) -> pd.Series:
        return parts[i].fillna("") if i in parts.columns else pd.Series("", index=raw.index, dtype="string[pyarrow]")

    user = col(0)
    if fmt == "lastfm":
        item = col(2).where(col(2).str.strip() != "", col(3))
        text = col(1).str.strip()
        iso_ok = text.str.fullmatch(ISO_8601_RE).fillna(False).to_numpy(dtype=bool)
        ts = pd.to_datetime(text.where(iso_ok), format="ISO8601", utc=True, errors="coerce")
        parsed_ok = iso_ok & ts.notna().to_numpy()
        ns = ts.dt.tz_localize(None).to_numpy().view("int64")
        ts_us = np.where(parsed_ok, ns // 1000, 0)
        time_reason = np.select([~parsed_ok, ts_us < 0], ["unparsable_timestamp", "negative_timestamp"], "")
    else:
        item = col(1)
        seconds = pd.to_numeric(col(2).str.strip(), errors="coerce")
        finite = np.isfinite(seconds.to_numpy(dtype="float64", na_value=np.nan))
        time_reason = np.select(
            [seconds.isna() & ~col(2).str.strip().str.lower().isin(["nan", "+nan", "-nan"]), ~finite, seconds < 0, seconds > MAX_EPOCH_SECONDS],
            ["unparsable_timestamp", "non_finite_timestamp", "negative_timestamp", "timestamp_out_of_range"],
            "",
        )  # fmt: skip
        ts_us = pd.Series(np.where(time_reason == "", np.round(seconds.fillna(0).to_numpy() * 1e6), 0).astype("int64"))
    reason = np.select(
        [
            raw["line"].str.contains("\ufffd", regex=False).to_numpy(dtype=bool),
            (n_fields != n_cols).to_numpy(dtype=bool),
            (user.str.strip() == "").to_numpy(dtype=bool),
            (item.str.strip() == "").to_numpy(dtype=bool),
            time_reason != "",
        ],
        ["invalid_utf8", "wrong_column_count", "empty_user", "empty_item", "time"],
        "",
    )
    reason = np.where(reason == "time", time_reason, reason)
    counts = {r: int((reason == r).sum()) for r in REASONS}
    good = reason == ""
    events = pd.DataFrame(
        {
            "user": user[good].astype(object).to_numpy(),
            "item": item[good].astype(object).to_numpy(),
            "ts_us": np.asarray(ts_us)[good],
            "seq": raw["seq"].to_numpy()[good],
        }
    )
    return events, {"raw_rows": len(raw), "quarantine_reasons": counts}


def sessionize_events(
    events: pd.DataFrame,
    session_gap_seconds: float,
    max_session_length: int = C.MAX_SESSION_LENGTH,
    min_session_length: int = 2,
    min_sessions_per_user: int = 3,
    train_fraction: float = 0.8,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply rules 1-6 to valid events (user, item, ts_us, seq): kept events and the rule counters."""
    L = max_session_length
    user_codes, user_keys = pd.factorize(events["user"], sort=True)
    order = np.lexsort((events["seq"].to_numpy(), events["ts_us"].to_numpy(), user_codes))
    u = user_codes[order]
    item_codes, item_keys = pd.factorize(events["item"])
    it = item_codes[order]
    ts = events["ts_us"].to_numpy()[order]
    seq = events["seq"].to_numpy()[order]
    n = len(u)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    starts = new_user.copy()
    starts[1:] |= (ts[1:] - ts[:-1]) > round(session_gap_seconds * 1_000_000)
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = ~starts[1:] & (it[1:] == it[:-1])
    raw_session = np.cumsum(starts) - 1
    counters = {"collapsed_repeats": int(repeat.sum()), "sessions_after_gap_rule": int(starts.sum())}

    keep = ~repeat
    u, it, ts, seq, rs = u[keep], it[keep], ts[keep], seq[keep], raw_session[keep]
    first = np.ones(len(u), dtype=bool)
    first[1:] = rs[1:] != rs[:-1]
    idx = np.arange(len(u))
    pos = idx - np.maximum.accumulate(np.where(first, idx, 0))
    length = np.bincount(rs, minlength=int(rs.max()) + 1 if len(rs) else 0)[rs] if len(rs) else rs
    chunk = pos // L
    chunk_len = np.minimum(L, length - chunk * L)
    short, long_ = length < min_session_length, length > 2 * L
    trailing = ~short & ~long_ & (chunk_len < min_session_length)
    counters["dropped_short_sessions"] = int((short & first).sum())
    counters["dropped_long_sessions"] = int((long_ & first).sum())
    counters["dropped_trailing_chunks"] = int(trailing.sum())
    counters["removed_events"] = counters["collapsed_repeats"] + int((short | long_ | trailing).sum())
    ok = ~(short | long_ | trailing)
    u, it, ts, seq, pos, chunk = u[ok], it[ok], ts[ok], seq[ok], pos[ok], chunk[ok]
    chunk_start = pos % L == 0
    session_global = np.cumsum(chunk_start) - 1  # chunks numbered over all users in (user, time) order
    user_first_session = pd.Series(session_global).groupby(u).transform("min").to_numpy()
    session_index = session_global - user_first_session
    n_sessions = pd.Series(session_index).groupby(u).transform("max").to_numpy() + 1
    enough = n_sessions >= min_sessions_per_user
    counters["input_users"] = len(user_keys)
    counters["dropped_user_events"] = int((~enough).sum())
    counters["removed_events"] += counters["dropped_user_events"]
    u, it, ts, seq, pos, chunk, session_index, n_sessions = (
        a[enough] for a in (u, it, ts, seq, pos, chunk, session_index, n_sessions)
    )
    # Gap at each chunk start from the previous kept event, carried to the chunk's events.
    prev_ts = np.empty_like(ts)
    prev_ts[1:] = ts[:-1]
    is_cont = chunk > 0
    start = pos % L == 0
    gap_start = np.where(is_cont, 0.0, (ts - prev_ts) / 1e6)
    gap_start = np.where(session_index == 0, np.nan, gap_start)
    carrier = np.maximum.accumulate(np.where(start, np.arange(len(ts)), 0))
    gap = gap_start[carrier]
    kept_users, user_id = np.unique(u, return_inverse=True)
    table = pd.DataFrame(
        {
            C.USER_ID: user_id.astype("int32"),
            "user_key": np.asarray(user_keys)[u],
            C.SESSION_INDEX: session_index.astype("int32"),
            C.POSITION: (pos % L).astype("int16"),
            "item_key": np.asarray(item_keys)[it],
            "t_us": ts,
            "seq": seq,
            C.GAP_BEFORE_SECONDS: gap,
            C.IS_CONTINUATION: is_cont,
            "is_train": session_index < np.floor(n_sessions * train_fraction),
        }
    )
    return table, counters


def sessionize_pandas(
    fmt: str,
    inputs: list[str],
    session_gap_seconds: float | None = None,
    run_date: str | None = None,
    return_events: bool = False,
) -> dict[str, Any]:
    """Stats of ``stats.json`` (every key of ``jobs.columns.STATS_KEYS``) for raw ``inputs`` of ``fmt``."""
    gap = float(session_gap_seconds) if session_gap_seconds is not None else DEFAULT_GAP_SECONDS[fmt]
    events, parsed = _parse(fmt, inputs)
    excluded = 0
    if run_date:
        end = dt.datetime.combine(dt.date.fromisoformat(run_date) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        after = events["ts_us"].to_numpy() >= int(end.timestamp()) * 1_000_000
        excluded = int(after.sum())
        events = events[~after]
    table, counters = sessionize_events(events, gap)
    chunk_first = table[C.POSITION].to_numpy() == 0
    train = table["is_train"].to_numpy()
    users = int(table[C.USER_ID].nunique())
    sessions = int(chunk_first.sum())
    quarantined = sum(parsed["quarantine_reasons"].values())
    stats: dict[str, Any] = {
        "raw_rows": parsed["raw_rows"],
        "quarantined_rows": quarantined,
        "excluded_after_run_date": excluded,
        "collapsed_repeats": counters["collapsed_repeats"],
        "dropped_short_sessions": counters["dropped_short_sessions"],
        "dropped_long_sessions": counters["dropped_long_sessions"],
        "dropped_trailing_chunks": counters["dropped_trailing_chunks"],
        "dropped_users": counters["input_users"] - users,
        "users": users,
        "sessions": sessions,
        "events": len(table),
        "items": int(table["item_key"].nunique()),
        "avg_session_length": len(table) / sessions if sessions else 0.0,
        "sessions_per_user": sessions / users if users else 0.0,
        "train_sessions": int((chunk_first & train).sum()),
        "test_sessions": int((chunk_first & ~train).sum()),
        "train_events": int(train.sum()),
        "test_events": int((~train).sum()),
        "quarantine_reasons": parsed["quarantine_reasons"],
    }
    accounted = len(table) + counters["removed_events"] + excluded + quarantined
    if accounted != stats["raw_rows"]:
        raise AssertionError(f"pandas accounting: {accounted} != {stats['raw_rows']}")
    if return_events:
        stats["_events"] = table
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=sorted(DEFAULT_GAP_SECONDS), help="raw input layout")
    parser.add_argument("--input", required=True, action="append", dest="inputs", help="input file (repeatable)")
    parser.add_argument("--session-gap-seconds", type=float, default=None, help="session gap (default per format)")
    parser.add_argument("--run-date", default=None, help="leave out events after this UTC day (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stats = sessionize_pandas(args.format, args.inputs, args.session_gap_seconds, args.run_date)
    stats["elapsed_seconds"] = round(time.perf_counter() - t0, 3)
    json.dump(stats, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
