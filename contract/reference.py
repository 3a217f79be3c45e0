"""Single-process pandas/numpy reference of the sessionize job (docs/design.md §2, §3): the same rules,
the same output and the same figures as the Spark job, for tests, benchmarks and small tools. It
imports neither Spark nor torch.

**Boundary** (docs/design.md §3). What it reproduces exactly, checked against the Spark job by
``tests/jobs/test_sessionize_reference.py``:

- :func:`sessionize_events`: rules 1-6 of docs/design.md §3.1 on already-parsed valid events, and the
  dense ids: ``users/`` (0..U-1 in user-key order), ``items/`` (1..N in order of the first kept event,
  display name of the first valid event), ``train/`` and ``test/`` with the columns and dtypes of the
  job's Parquet files as pyarrow reads them back, and every figure of ``stats.json`` from
  ``collapsed_repeats`` on (docs/design.md §3.4).
- :func:`sessionize_files`: local **text** inputs of every format (``lastfm``, ``reddit``, delimited
  ``events`` with or without a header), plain or gzipped: line numbering, input order, the run-date
  cut-off, the bad-row gate, every quarantine reason of :data:`contract.constants.REASONS` with the job's
  ``quarantine/`` rows, and the whole ``stats.json`` but ``elapsed_seconds``.

Spark-only: Parquet input of the ``events`` format, folders, globs and remote paths, and the atomic
writing of the output folder. Numbers are read as Spark reads them (Java's grammar: hex floats and
``d``/``f`` suffixes accepted, ``1_000`` and non-ASCII digits refused); an ISO time as Spark's cast does
(fractions truncated to microseconds, zones up to ±18:00, no zone without seconds).
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from contract import columns as C
from contract import constants as K
from contract.rules import (
    LASTFM_LAYOUT,
    REDDIT_LAYOUT,
    EventsOptions,
    InputError,
    SessionizeError,
    SessionRules,
    TextLayout,
    check_headers,
    events_layout,
    run_settings,
)

# Columns of the parsed events :func:`sessionize_events` takes.
USER_KEY, ITEM_KEY, ITEM_NAME, TS_US, SEQ = "user_key", "item_key", "item_name", "ts_us", "seq"

# Spark's rlike is Java regex: \d is ASCII only there, so say so here.
_NUMERIC = re.compile(K.NUMERIC_RE.replace(r"\d", "[0-9]"))
_ISO = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
_CONTROL = re.compile(K.CONTROL_RE)
# Java's Double.parseDouble grammar (decimal and hex; optional float/double suffix)
_JAVA_DECIMAL = re.compile(r"^[+-]?(NaN|Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?)$")
_JAVA_HEX = re.compile(r"^[+-]?0[xX]([0-9a-fA-F]+\.?|[0-9a-fA-F]*\.[0-9a-fA-F]+)[pP][+-]?[0-9]+[fFdD]?$")
# Spark's fallback for what Java refuses (lower-cased)
_SPECIAL = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
            "-inf": -math.inf, "-infinity": -math.inf, "nan": math.nan}  # fmt: skip
_JAVA_WS = "".join(chr(c) for c in range(0x21))  # String.trim: every char <= U+0020
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")  # Hadoop's line reader ends a line at any of them


# --------------------------------------------------------------------------------------------------
# parsing (Spark: jobs.sessionize.transforms.parse_text_lines)
# --------------------------------------------------------------------------------------------------
def spark_double(text: str) -> float | None:
    """``try_cast(text AS double)`` as Spark computes it; None where Spark gives null."""
    s = text.strip(_JAVA_WS)
    if _JAVA_DECIMAL.match(s):
        return float(s[:-1] if s[-1] in "fFdD" else s)
    if _JAVA_HEX.match(s):
        sign = -1.0 if s.startswith("-") else 1.0
        return sign * float.fromhex(s.lstrip("+-").rstrip("fFdD"))
    return _SPECIAL.get(s.lower())


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def spark_iso_micros(text: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 string as Spark's timestamp cast reads it (session
    zone UTC); None where the pattern of docs/design.md §2 does not match or Spark gives null."""
    m = _ISO.match(text)
    if m is None:
        return None
    y, mo, d, h, mi = (int(m.group(i)) for i in range(1, 6))
    sec, frac, zone = m.group(6), m.group(7), m.group(8)
    if zone is not None and sec is None:  # Spark refuses a zone after hours and minutes alone
        return None
    if not (1 <= mo <= 12 and d >= 1 and h <= 23 and mi <= 59 and int(sec or 0) <= 59):
        return None
    next_month = _days_from_civil(y + (mo == 12), mo % 12 + 1, 1)
    days = _days_from_civil(y, mo, d)
    if days >= next_month:
        return None
    offset = 0
    if zone not in (None, "Z"):
        digits = zone[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:] or 0)
        if om > 59 or oh * 60 + om > 18 * 60:
            return None
        offset = (oh * 3600 + om * 60) * (-1 if zone[0] == "-" else 1)
    micros = int((frac or "").ljust(6, "0")[:6])  # truncated, as Spark does
    return (days * 86400 + h * 3600 + mi * 60 + int(sec or 0) - offset) * 1_000_000 + micros


def _time_reason(text: str | None, kind: str) -> tuple[str | None, int | None]:
    """(reason or None, microseconds) of a time field, per transforms._validated / _time_checks."""
    if text is None:
        return K.UNPARSABLE_TIMESTAMP, None
    t = text.strip(" ")  # Spark's trim: spaces only
    seconds = None
    if kind == "epoch" or (kind == "auto" and _NUMERIC.match(t)):
        seconds = spark_double(t)
    if seconds is not None:
        if math.isnan(seconds) or math.isinf(seconds):
            return K.NON_FINITE_TIMESTAMP, None
        if seconds < 0:
            return K.NEGATIVE_TIMESTAMP, None
        if seconds > K.MAX_EPOCH_SECONDS:
            return K.TIMESTAMP_OUT_OF_RANGE, None
        x = seconds * 1_000_000
        r = math.floor(x)
        return None, int(r + (x - r >= 0.5))  # Spark's round: half up
    if kind == "epoch":
        return K.UNPARSABLE_TIMESTAMP, None
    us = spark_iso_micros(t)
    if us is None:
        return K.UNPARSABLE_TIMESTAMP, None
    return (K.NEGATIVE_TIMESTAMP, None) if us < 0 else (None, us)


def _blank(v: str | None) -> bool:
    return v is None or v.strip(" ") == ""


_STRIP_QUOTES = re.compile('^"([^\n\r\x85\u2028\u2029]*)"$')  # Java's '.' stops at line terminators


def parse_line(raw: bytes, layout: TextLayout) -> tuple[str | None, str | None, str | None, str | None, int | None]:
    """(reason, user, item, name, ts_us) of one raw line; the keys are None for a quarantined line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return K.INVALID_UTF8, None, None, None, None
    parts = text.split(layout.delimiter)

    def at(pos: int | None) -> str | None:
        if pos is None or pos >= len(parts):
            return None
        v = parts[pos]
        return _STRIP_QUOTES.sub(r"\1", v) if layout.strip_quotes else v

    if len(parts) != layout.n_columns:
        return K.WRONG_COLUMN_COUNT, None, None, None, None
    user, item = at(layout.user_pos), at(layout.item_pos)
    if layout.item_fallback_pos is not None and _blank(item):
        item = at(layout.item_fallback_pos)
    name = at(layout.name_pos) if layout.name_pos is not None else item
    if _blank(user):
        return K.EMPTY_USER, None, None, None, None
    if _blank(item):
        return K.EMPTY_ITEM, None, None, None, None
    if any(v is not None and _CONTROL.search(v) for v in (user, item, name)):
        return K.CONTROL_CHARACTER, None, None, None, None
    reason, ts = _time_reason(at(layout.time_pos), layout.time_kind)
    if reason is not None:
        return reason, None, None, None, None
    return None, user, item, name, ts


def read_lines(path: str) -> list[bytes]:
    """The lines of a local text file (gunzipped when the name ends in .gz, as Spark decides), split as
    Hadoop's line reader splits them."""
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    lines = _LINE_BREAK.split(data)
    if lines and lines[-1] == b"":  # a final line break ends the last line, it starts none
        lines.pop()
    return lines


def _layout(fmt: str, files: list[tuple[str, list[bytes]]], options: EventsOptions) -> tuple[TextLayout, bool]:
    """The layout of ``fmt`` and whether line 1 of every file is a header (as jobs.sessionize.job._parse)."""
    heads = [(path, lines[0].decode("utf-8", "replace") if lines else None) for path, lines in files]
    if fmt == K.LASTFM:
        return LASTFM_LAYOUT, False
    if fmt == K.REDDIT:
        check_headers(heads, ",", K.REDDIT_COLUMNS)
        return REDDIT_LAYOUT, True
    if options.header:
        return events_layout(options, check_headers(heads, options.delimiter, None)), True
    names = list(options.column_names or (options.user_col, options.item_col, options.time_col))
    return events_layout(options, names), False


def parse_files(
    fmt: str, inputs: list[str], options: EventsOptions | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid events, quarantine rows) of local text ``inputs`` of ``fmt``.

    Valid events have columns user_key, item_key, item_name, ts_us, seq (file order, then line); the
    quarantine has the columns of ``quarantine/`` in input order.
    """
    options = options or EventsOptions()
    if fmt not in K.FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {K.FORMATS}")
    if fmt == K.EVENTS and (options.input_format == "parquet" or any(p.endswith(".parquet") for p in inputs)):
        raise ValueError("the reference reads text inputs only; Parquet input is Spark-only (docs/design.md §3)")
    files = []
    for path in inputs:
        if not os.path.isfile(path):
            raise InputError(f"input {path!r} is not a local file (folders and globs are Spark-only here)")
        files.append((os.path.abspath(path), read_lines(path)))
    layout, has_header = _layout(fmt, files, options)
    good: dict[str, list] = {USER_KEY: [], ITEM_KEY: [], ITEM_NAME: [], TS_US: [], SEQ: []}
    bad: dict[str, list] = {c: [] for c in C.QUARANTINE_COLUMNS}
    for file_idx, (display, lines) in enumerate(files):
        for line_number, raw in enumerate(lines, start=1):
            if has_header and line_number == 1:
                continue
            reason, user, item, name, ts = parse_line(raw, layout)
            if reason is None:
                for col, v in zip(good, (user, item, name, ts, file_idx * K.SEQ_FILE_SHIFT + line_number), strict=True):
                    good[col].append(v)
            else:
                for col, v in zip(bad, (display, line_number, raw.decode("utf-8", "replace"), reason), strict=True):
                    bad[col].append(v)
    events = pd.DataFrame({
        USER_KEY: pd.Series(good[USER_KEY], dtype=object),
        ITEM_KEY: pd.Series(good[ITEM_KEY], dtype=object),
        ITEM_NAME: pd.Series(good[ITEM_NAME], dtype=object),
        TS_US: np.asarray(good[TS_US], dtype=np.int64),
        SEQ: np.asarray(good[SEQ], dtype=np.int64),
    })  # fmt: skip
    quarantine = pd.DataFrame({
        C.SOURCE_FILE: pd.Series(bad[C.SOURCE_FILE], dtype=object),
        C.LINE_NUMBER: np.asarray(bad[C.LINE_NUMBER], dtype=np.int64),
        C.RAW_RECORD: pd.Series(bad[C.RAW_RECORD], dtype=object),
        C.REASON: pd.Series(bad[C.REASON], dtype=object),
    })  # fmt: skip
    return events, quarantine


# --------------------------------------------------------------------------------------------------
# the rules (Spark: jobs.sessionize.transforms.sessionize, build_users, build_items, build_events)
# --------------------------------------------------------------------------------------------------
@dataclass
class Output:
    """What the job writes: the four tables of docs/design.md §3.3 (dtypes as pyarrow reads the job's
    Parquet back), the quarantine rows and the stats.json figures."""

    train: pd.DataFrame
    test: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, Any]


def sessionize_events(events: pd.DataFrame, rules: SessionRules | None = None) -> tuple[
    pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]
]:
    """Rules 1-6 of docs/design.md §3.1 on valid events -> (train, test, items, users, figures).

    ``events`` has columns user_key, item_key (strings), ts_us (int64 microseconds), seq (int64 input
    order: the tie-breaker for equal times) and optionally item_name (default: the item key). The
    figures are those of stats.json from ``collapsed_repeats`` on (docs/design.md §3.4).
    """
    rules = rules or SessionRules()
    L, min_len = rules.max_session_length, rules.min_session_length
    names = events[ITEM_NAME] if ITEM_NAME in events.columns else events[ITEM_KEY]
    user_codes, user_keys = pd.factorize(events[USER_KEY], sort=True)  # code order = key order
    item_codes, item_keys = pd.factorize(events[ITEM_KEY])
    ts_all, seq_all = events[TS_US].to_numpy(np.int64), events[SEQ].to_numpy(np.int64)
    order = np.lexsort((seq_all, ts_all, user_codes))
    u, it, ts, seq = user_codes[order], item_codes[order], ts_all[order], seq_all[order]
    n = len(u)

    # Display names: the name of the item's first valid event (time, then input order).
    first_valid = np.lexsort((seq_all, ts_all, item_codes))
    is_first = np.ones(n, dtype=bool)
    is_first[1:] = item_codes[first_valid][1:] != item_codes[first_valid][:-1]
    name_of = np.empty(len(item_keys), dtype=object)
    name_of[item_codes[first_valid][is_first]] = names.to_numpy(object)[first_valid][is_first]

    # Rule 1 (gap strictly larger, exact microseconds) and rule 2 (repeats inside a session).
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    starts = new_user.copy()
    starts[1:] |= (ts[1:] - ts[:-1]) > int(round(rules.session_gap_seconds * 1_000_000))
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = ~starts[1:] & (it[1:] == it[:-1])
    raw_session = np.cumsum(starts) - 1  # over all users
    fig: dict[str, Any] = {"collapsed_repeats": int(repeat.sum()), "sessions_after_gap_rule": int(starts.sum())}

    # Rules 3 and 4 on the non-repeats.
    keep = ~repeat
    u, it, ts, seq, rs = u[keep], it[keep], ts[keep], seq[keep], raw_session[keep]
    m = len(u)
    first = np.ones(m, dtype=bool)
    first[1:] = rs[1:] != rs[:-1]
    idx = np.arange(m)
    pos = idx - np.maximum.accumulate(np.where(first, idx, 0))
    length = np.bincount(rs, minlength=int(rs.max()) + 1)[rs] if m else np.zeros(0, np.int64)
    chunk = pos // L
    short = length < min_len
    long_ = ~short & (length > 2 * L)
    trailing = ~short & ~long_ & (np.minimum(L, length - chunk * L) < min_len)
    fig["dropped_short_sessions"] = int((short & first).sum())
    fig["dropped_long_sessions"] = int((long_ & first).sum())
    removed = {K.COLLAPSED_REPEAT: fig["collapsed_repeats"], K.SHORT_SESSION: int(short.sum()),
               K.LONG_SESSION: int(long_.sum()), K.TRAILING_CHUNK: int(trailing.sum())}  # fmt: skip
    ok = ~(short | long_ | trailing)
    u, it, ts, seq, pos, chunk = u[ok], it[ok], ts[ok], seq[ok], pos[ok], chunk[ok]
    m = len(u)
    chunk_start = pos % L == 0
    new_user = np.ones(m, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    session_global = np.cumsum(chunk_start) - 1
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(m), 0)) if m else np.zeros(0, np.int64)
    session_index = session_global - session_global[user_start]
    user_end = np.append(np.flatnonzero(new_user)[1:], m) - 1 if m else np.zeros(0, np.int64)
    n_sess_user = (session_index[user_end] + 1) if m else np.zeros(0, np.int64)
    n_sessions = np.repeat(n_sess_user, np.diff(np.append(np.flatnonzero(new_user), m))) if m else n_sess_user

    # Gap (docs/design.md §3.2): from the user's previous event that survived rule 4; 0 in continuations.
    prev_ts = np.empty_like(ts)
    prev_ts[1:] = ts[:-1]
    start_gap = np.where(chunk > 0, 0.0, (ts - prev_ts) / 1_000_000.0)
    start_gap = np.where(new_user, np.nan, start_gap)
    carrier = np.maximum.accumulate(np.where(chunk_start, np.arange(m), 0)) if m else np.zeros(0, np.int64)
    gap = start_gap[carrier]

    # Rule 5 (users with too few sessions) and rule 6 (train / test).
    enough = n_sessions >= rules.min_sessions_per_user
    removed[K.DROPPED_USER] = int((~enough).sum())
    fig["dropped_user_sessions"] = int((~enough & chunk_start).sum())
    u, it, ts, seq, pos, chunk, session_index, n_sessions, gap = (
        a[enough] for a in (u, it, ts, seq, pos, chunk, session_index, n_sessions, gap)
    )
    is_train = session_index < np.floor(n_sessions * rules.train_fraction)

    # Ids: users dense 0..U-1 in key order, sessions numbered in (user, time) order, items 1..N in order
    # of their first kept event (time, then input order).
    kept_users, user_id = np.unique(u, return_inverse=True)
    session_id = np.cumsum(pos % L == 0) - 1
    by_first = np.lexsort((seq, ts))
    item_order = pd.unique(it[by_first])
    item_id_of = np.zeros(len(item_keys), dtype=np.int32)
    item_id_of[item_order] = np.arange(1, len(item_order) + 1, dtype=np.int32)
    events_out = pd.DataFrame({
        C.USER_ID: user_id.astype(np.int32),
        C.SESSION_ID: session_id.astype(np.int64),
        C.SESSION_INDEX: session_index.astype(np.int32),
        C.POSITION: (pos % L).astype(np.int16),
        C.ITEM_ID: item_id_of[it],
        C.EVENT_TIME: pd.Series(ts.astype("datetime64[us]")).dt.tz_localize("UTC"),
        C.GAP_BEFORE_SECONDS: gap.astype(np.float64),
        C.IS_CONTINUATION: chunk > 0,
    })  # fmt: skip
    train = events_out[is_train].reset_index(drop=True)
    test = events_out[~is_train].reset_index(drop=True)
    train_count = np.bincount(item_id_of[it][is_train], minlength=len(item_order) + 1)[1:]
    items = pd.DataFrame({
        C.ITEM_ID: np.arange(1, len(item_order) + 1, dtype=np.int32),
        C.ITEM_KEY: pd.Series(np.asarray(item_keys, dtype=object)[item_order], dtype=object),
        C.ITEM_NAME: pd.Series(name_of[item_order], dtype=object),
        C.TRAIN_COUNT: train_count.astype(np.int64),
    })  # fmt: skip
    users = pd.DataFrame({
        C.USER_ID: np.arange(len(kept_users), dtype=np.int32),
        C.USER_KEY: pd.Series(np.asarray(user_keys, dtype=object)[kept_users], dtype=object),
    })  # fmt: skip

    n_users, sessions, n_events = len(kept_users), int((pos % L == 0).sum()), len(u)
    chunk_first = pos % L == 0
    fig.update(
        dropped_trailing_chunks=removed[K.TRAILING_CHUNK],
        dropped_users=len(user_keys) - n_users,
        users=n_users,
        sessions=sessions,
        events=n_events,
        items=len(item_order),
        avg_session_length=n_events / sessions if sessions else 0.0,
        sessions_per_user=sessions / n_users if n_users else 0.0,
        train_sessions=int((chunk_first & is_train).sum()),
        test_sessions=int((chunk_first & ~is_train).sum()),
        train_events=int(is_train.sum()),
        test_events=int((~is_train).sum()),
        events_removed_by_rule={f: removed[f] for f in K.FATES if f != K.KEPT},
    )
    return train, test, items, users, fig


def _end_of_day_us(run_date: dt.date) -> int:
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp()) * 1_000_000


def sessionize_files(
    fmt: str,
    inputs: list[str] | str,
    session_gap_seconds: float | None = None,
    run_date: str | dt.date | None = None,
    max_bad_fraction: float = 0.01,
    rules: SessionRules | None = None,
    **format_options: Any,
) -> Output:
    """What ``jobs.sessionize.run`` writes for the same arguments (local text inputs only; see the
    module docstring), without writing it. Raises :class:`contract.rules.SessionizeError` where the job does.
    """
    if format_options and fmt != K.EVENTS:
        raise ValueError(f"format options {sorted(format_options)} apply to the events format only")
    options = EventsOptions(**format_options)
    inputs = [inputs] if isinstance(inputs, str) else [str(p) for p in inputs]
    gap = float(session_gap_seconds) if session_gap_seconds is not None else K.DEFAULT_GAP_SECONDS[fmt]
    rules = SessionRules(**{**asdict(rules or SessionRules()), "session_gap_seconds": gap})
    day = dt.date.fromisoformat(run_date) if isinstance(run_date, str) else run_date
    valid, quarantine = parse_files(fmt, inputs, options)

    raw_rows = len(valid) + len(quarantine)
    if raw_rows == 0:
        raise SessionizeError(f"the inputs hold no data rows ({len(inputs)} file(s))")
    after = valid[TS_US].to_numpy() >= _end_of_day_us(day) if day else np.zeros(len(valid), dtype=bool)
    excluded = int(after.sum())
    bad = len(quarantine)
    if day is not None and excluded and raw_rows == bad + excluded:
        raise SessionizeError(f"all {excluded} valid rows of the inputs are after the run date {day}")
    return finish(valid[~after].reset_index(drop=True), quarantine, raw_rows, bad, excluded, fmt, inputs, day,
                  max_bad_fraction, rules, options, gap)


def finish(valid: pd.DataFrame, quarantine: pd.DataFrame, raw_rows: int, bad: int, excluded: int, fmt: str,
           inputs: list[str], day: dt.date | None, max_bad_fraction: float, rules: SessionRules,
           options: EventsOptions, gap: float) -> Output:
    """The rules on the valid events of the run and the stats.json of docs/design.md §3.4 (shared by every
    pandas sessionizer so their accounting cannot drift apart)."""
    if bad / raw_rows > max_bad_fraction:
        raise SessionizeError(f"{bad} of {raw_rows} rows are malformed, above --max-bad-fraction {max_bad_fraction}")
    train, test, items, users, fig = sessionize_events(valid, rules)
    if fig["sessions"] == 0:
        raise SessionizeError("no sessions are left after the rules; nothing to train on")
    reasons = quarantine[C.REASON].value_counts()
    stats: dict[str, Any] = {"raw_rows": raw_rows, "quarantined_rows": bad, "excluded_after_run_date": excluded}
    stats.update({k: fig[k] for k in C.STATS_KEYS if k in fig})
    stats.update(
        events_removed_by_rule=fig["events_removed_by_rule"],
        sessions_after_gap_rule=fig["sessions_after_gap_rule"],
        dropped_user_sessions=fig["dropped_user_sessions"],
        quarantine_reasons={r: int(reasons.get(r, 0)) for r in K.REASONS},
        bad_fraction=bad / raw_rows,
        valid_rows=raw_rows - bad - excluded,
        accounting_ok=True,  # by construction: every valid event has one fate
        # the reference reads files only: one file per input
        **run_settings(fmt, inputs, len(inputs), day, max_bad_fraction, rules, options, gap),
    )
    return Output(train, test, items, users, quarantine, stats)


def sessionize_frame(
    events: pd.DataFrame,
    session_gap_seconds: float,
    *,
    max_len: int = C.MAX_SESSION_LENGTH,
    min_sessions: int = 3,
    train_fraction: float = 0.8,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, test, items, users) of a typed frame with columns user, item, time (epoch seconds) in
    input order, as the job gives for the same rows written as ``events`` text: keys compared as their
    text (``str``), times rounded to microseconds half up."""
    t = events["time"].to_numpy(np.float64) * 1_000_000
    r = np.floor(t)
    parsed = pd.DataFrame({
        USER_KEY: events["user"].map(str).astype(object),
        ITEM_KEY: events["item"].map(str).astype(object),
        TS_US: (r + (t - r >= 0.5)).astype(np.int64),
        SEQ: np.arange(1, len(events) + 1, dtype=np.int64),
    })  # fmt: skip
    rules = SessionRules(session_gap_seconds=float(session_gap_seconds), max_session_length=max_len,
                         min_sessions_per_user=min_sessions, train_fraction=train_fraction)  # fmt: skip
    train, test, items, users, _ = sessionize_events(parsed, rules)
    return train, test, items, users
