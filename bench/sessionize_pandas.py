"""The single-process side of ``bench/sessionize.py``: a vectorized pandas/numpy/pyarrow sessionizer of
raw ``lastfm`` and ``reddit`` text logs that gives what the Spark job gives (docs/design.md §2, §3).

It is what the Spark job is timed against, so it has to be the fast one: the pandas reference
(``contract.reference``) parses line by line in Python, right for tests but several times slower.
Here every line of the common shape (one regex over the whole line, matched in bulk by pyarrow) is
parsed vectorized; every other line (malformed, odd times, control characters, invalid UTF-8, CR line
ends, ...) goes through the reference's own line parser, so both give the same rows and reasons. The
rules, ids and figures are the reference's vectorized :func:`contract.reference.sessionize_events`.

    python bench/sessionize_pandas.py --format lastfm --input var/bench/lastfm_1000000_seed0.tsv \\
        [--output DIR]      # DIR: also write the job's layout (Parquet tables, stats.json)

It prints the stats.json figures; ``--reference`` runs the line-by-line reference instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contract import columns as C
from contract import constants as K
from contract import reference
from contract.rules import (
    LASTFM_LAYOUT,
    REDDIT_LAYOUT,
    EventsOptions,
    SessionizeError,
    SessionRules,
    check_headers,
)

# The common shape of a line, parsed in bulk; any other line goes to reference.parse_line. A key
# holds no delimiter or C0 control and one character at least that is neither a control nor a space
# (so it is not blank); the lastfm MBID and artist name hold no control (either may be blank: the
# fallback rule is applied after). Times: ISO seconds with Z (lastfm), plain decimal seconds (reddit).
_KEY = r"[^\t,\x00-\x1f]*[^\t,\x00-\x20][^\t,\x00-\x1f]*"
_FAST = {
    K.LASTFM: (
        rf"^(?P<user>{_KEY})\t(?P<time>\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}Z)"
        r"\t(?P<mbid>[^\t\x00-\x1f]*)\t(?P<artist>[^\t\x00-\x1f]*)\t[^\t]*\t[^\t]*$"
    ),
    K.REDDIT: rf"^(?P<user>{_KEY}),(?P<item>{_KEY}),(?P<time>\d{{1,11}}(?:\.\d{{1,6}})?)$",
}
ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
_LAYOUTS = {K.LASTFM: LASTFM_LAYOUT, K.REDDIT: REDDIT_LAYOUT}
QUARANTINE_SCHEMA = pa.schema([(C.SOURCE_FILE, pa.string()), (C.LINE_NUMBER, pa.int64()),
                               (C.RAW_RECORD, pa.string()), (C.REASON, pa.string())])  # fmt: skip
FIELDS = (reference.USER_KEY, reference.ITEM_KEY, reference.ITEM_NAME, reference.TS_US, reference.SEQ)


def _read(path: str) -> tuple[pa.Array, list[bytes]]:
    """A file's lines as Hadoop's reader splits them: one Arrow string array (invalid UTF-8 replaced by
    U+FFFD) and, unless the file is valid UTF-8 with ``\n`` line ends only, the lines as bytes too."""
    data = Path(path).read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if b"\r" in data:  # CR line ends: the reference's split
        raw = reference.read_lines(path)
        return pa.array([r.decode("utf-8", "replace") for r in raw], pa.string()), raw
    try:
        text, raw = data.decode("utf-8"), []
    except UnicodeDecodeError:  # \n is never part of a bad sequence: the same line breaks
        text, raw = data.decode("utf-8", "replace"), data.split(b"\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":  # a final line break ends the last line, it starts none
        lines.pop()
        raw = raw[:-1]
    return pa.array(lines, pa.string()), raw


def _fast(fmt: str, lines: pa.Array) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(which lines are parsed here, their user, item, name and ts_us in line order)."""
    fields = pc.extract_regex(lines, _FAST[fmt])
    # a U+FFFD may stand for invalid UTF-8: such lines are left to the reference
    matched = fields.is_valid().to_numpy(zero_copy_only=False)
    matched &= ~pc.match_substring(lines, "\ufffd").to_numpy(zero_copy_only=False)
    rows = fields.filter(pa.array(matched))
    user = rows.field("user")
    if fmt == K.LASTFM:
        mbid, name = rows.field("mbid"), rows.field("artist")
        item = pc.if_else(pc.equal(pc.utf8_trim(mbid, " "), ""), name, mbid)  # no MBID: the artist name
        text = rows.field("time")
        ts = pc.strptime(text, format=ISO_SECONDS, unit="s", error_is_null=True)
        # a date that does not exist (Feb 30) or one before 1970: the reference decides
        good = pc.fill_null(pc.equal(pc.strftime(ts, format=ISO_SECONDS), text), False)
        good = pc.and_(good, pc.invert(pc.equal(pc.utf8_trim(item, " "), ""))).to_numpy(zero_copy_only=False)
        ts_us = pc.fill_null(pc.cast(ts, pa.int64()), -1).to_numpy() * 1_000_000
        good &= ts_us >= 0
    else:
        item = name = rows.field("item")
        x = pc.cast(rows.field("time"), pa.float64()).to_numpy(zero_copy_only=False) * 1_000_000
        r = np.floor(x)
        ts_us = (r + (x - r >= 0.5)).astype(np.int64)  # Spark's round: half up
        good = x <= K.MAX_EPOCH_SECONDS * 1_000_000
    mask = np.zeros(len(lines), dtype=bool)
    mask[np.flatnonzero(matched)[good]] = True
    keep = pa.array(good)
    values = {
        reference.USER_KEY: user.filter(keep).to_numpy(zero_copy_only=False),
        reference.ITEM_KEY: item.filter(keep).to_numpy(zero_copy_only=False),
        reference.ITEM_NAME: name.filter(keep).to_numpy(zero_copy_only=False),
        reference.TS_US: ts_us[good],
    }
    return mask, values


def parse_files(fmt: str, inputs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid events, quarantine rows) of raw ``inputs``, as :func:`contract.reference.parse_files`."""
    layout, has_header = _LAYOUTS[fmt], fmt == K.REDDIT
    frames, bad = [], []
    for file_idx, path in enumerate(inputs):
        display = os.path.abspath(path)
        lines, raw = _read(path)
        n = len(lines)
        start = 1 if has_header else 0  # line 1 is the header: checked, never a data row
        if has_header:
            check_headers([(display, lines[0].as_py() if n else None)], ",", K.REDDIT_COLUMNS)
        mask = np.zeros(n, dtype=bool)
        if n > start:
            mask[start:], values = _fast(fmt, lines.slice(start))
            seq = file_idx * K.SEQ_FILE_SHIFT + np.flatnonzero(mask) + 1
            frames.append(pd.DataFrame({**values, reference.SEQ: seq}))
        slow: dict[str, list] = {c: [] for c in FIELDS}
        for i in np.flatnonzero(~mask[start:]) + start:
            line = raw[i] if raw else lines[int(i)].as_py().encode("utf-8")
            reason, user, item, name, ts = reference.parse_line(line, layout)
            if reason is None:
                for col, v in zip(FIELDS, (user, item, name, ts, file_idx * K.SEQ_FILE_SHIFT + int(i) + 1), strict=True):
                    slow[col].append(v)
            else:
                bad.append((display, int(i) + 1, line.decode("utf-8", "replace"), reason))
        if slow[reference.SEQ]:
            frames.append(pd.DataFrame(slow))
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in FIELDS})
    events = events.astype({reference.TS_US: np.int64, reference.SEQ: np.int64})
    events = events.sort_values(reference.SEQ, ignore_index=True)  # input order, as the reference
    quarantine = pd.DataFrame(bad, columns=C.QUARANTINE_COLUMNS).astype({C.LINE_NUMBER: np.int64})
    return events, quarantine


def sessionize_files(
    fmt: str, inputs: list[str], session_gap_seconds: float | None = None, run_date: str | None = None,
    max_bad_fraction: float = 1.0,
) -> reference.Output:
    """What the job writes for raw ``inputs`` of ``fmt`` (the steps of
    :func:`contract.reference.sessionize_files` after its parser); default: no bad-row gate."""
    gap = float(session_gap_seconds) if session_gap_seconds is not None else K.DEFAULT_GAP_SECONDS[fmt]
    rules = SessionRules(session_gap_seconds=gap)
    day = dt.date.fromisoformat(run_date) if run_date else None
    valid, quarantine = parse_files(fmt, inputs)
    raw_rows, bad = len(valid) + len(quarantine), len(quarantine)
    if raw_rows == 0:
        raise SessionizeError(f"the inputs hold no data rows ({len(inputs)} file(s))")
    if day is not None:
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()) * 1_000_000
        after = valid[reference.TS_US].to_numpy() >= end
    else:
        after = np.zeros(len(valid), dtype=bool)
    excluded = int(after.sum())
    return reference.finish(valid[~after].reset_index(drop=True), quarantine, raw_rows, bad, excluded, fmt,
                            inputs, day, max_bad_fraction, rules, EventsOptions(), gap)


def sessionize_pandas(
    fmt: str, inputs: list[str], session_gap_seconds: float | None = None, run_date: str | None = None
) -> dict[str, Any]:
    """stats.json of the job for raw ``inputs`` of ``fmt`` (no bad-row gate: the benchmark measures)."""
    return sessionize_files(fmt, inputs, session_gap_seconds, run_date).stats


def write_output(out: reference.Output, path: Path) -> None:
    """The job's layout (docs/design.md §3.3): one Parquet file per table, stats.json."""
    if path.exists():
        shutil.rmtree(path)
    for name, frame in ((C.TRAIN_DIR, out.train), (C.TEST_DIR, out.test), (C.ITEMS_DIR, out.items),
                        (C.USERS_DIR, out.users), (C.QUARANTINE_DIR, out.quarantine)):  # fmt: skip
        (path / name).mkdir(parents=True)
        schema = QUARANTINE_SCHEMA if name == C.QUARANTINE_DIR else None  # typed even when empty
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path / name / "part-00000.parquet")
    (path / C.STATS_FILE).write_text(json.dumps(out.stats, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=K.TEXT_LOG_FORMATS, help="raw input layout")
    parser.add_argument("--input", required=True, action="append", dest="inputs", help="input file (repeatable)")
    parser.add_argument("--session-gap-seconds", type=float, default=None,
                        help=f"session gap (default per format: {K.DEFAULT_GAP_SECONDS})")  # fmt: skip
    parser.add_argument("--run-date", default=None, help="leave out events after this UTC day (YYYY-MM-DD)")
    parser.add_argument("--output", type=Path, default=None, help="also write the job's output layout here")
    parser.add_argument("--reference", action="store_true", help="run the line-by-line reference instead")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.reference:
        out = reference.sessionize_files(args.format, args.inputs, args.session_gap_seconds, args.run_date,
                                         max_bad_fraction=1.0)  # fmt: skip
    else:
        out = sessionize_files(args.format, args.inputs, args.session_gap_seconds, args.run_date)
    if args.output is not None:
        write_output(out, args.output)
    stats = {**out.stats, "elapsed_seconds": round(time.perf_counter() - t0, 3)}
    json.dump(stats, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
