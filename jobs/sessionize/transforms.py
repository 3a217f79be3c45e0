"""Pure DataFrame -> DataFrame steps of the sessionize job (docs/design.md §2, §3). No reading or
writing here.

The steps, in order:

1. :func:`parse_text_lines` / :func:`parse_rows` turn raw lines (or Parquet rows) into keys and an
   exact microsecond time, with a quarantine ``reason`` for every malformed row (:data:`REASONS`).
2. :func:`row_summary` counts rows per file split and reason in one pass: :func:`summary_counts`
   gives the accounting, :func:`summary_blocks`, :func:`block_offsets` and :func:`number_rows` every
   row's 1-based line number within its file and a ``seq`` that orders rows by (file, line): the
   tie-breaker for equal times.
3. :func:`mark_excluded` flags valid events after the end of the run date.
4. :func:`sessionize` applies the rules of docs/design.md §3.1 in their order and labels every event
   with its ``fate`` (kept, or the rule that removed it), so that the accounting adds up by construction.
5. :func:`build_users`, :func:`build_items`, :func:`build_events` give the dense ids and the output rows.

All per-user work runs in window functions partitioned by the user key, so the events are shuffled
once; no Python UDFs.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from contract import columns as C

# The reasons, fates, time patterns and layouts are shared with the pandas reference (contract.reference)
# and the generator; they live in the Spark-free modules and are re-exported here for the job.
from contract.constants import (  # noqa: F401
    COLLAPSED_REPEAT,
    CONTROL_CHARACTER,
    CONTROL_RE,
    DROPPED_USER,
    EMPTY_ITEM,
    EMPTY_USER,
    FATES,
    INVALID_UTF8,
    ISO_8601_RE,
    KEPT,
    LONG_SESSION,
    MAX_EPOCH_SECONDS,
    NEGATIVE_TIMESTAMP,
    NON_FINITE_TIMESTAMP,
    NUMERIC_RE,
    REASONS,
    SEQ_FILE_SHIFT,
    SHORT_SESSION,
    TIMESTAMP_OUT_OF_RANGE,
    TRAILING_CHUNK,
    UNPARSABLE_TIMESTAMP,
    WRONG_COLUMN_COUNT,
)
from contract.rules import LASTFM_LAYOUT, REDDIT_LAYOUT, SessionRules, TextLayout  # noqa: F401
from jobs import schemas as S

# Columns added by sessionize() (besides the input's user_key, item_key, ts_us, seq).
RAW_SESSION = "raw_session"  # 0-based session number of the user after rule 1
RAW_POSITION = "raw_position"  # 0-based position in the raw session after rule 2 (null for repeats)
FATE = "fate"
N_SESSIONS = "n_sessions"  # sessions of the user after rule 4
IS_TRAIN = "is_train"
EXCLUDED = "excluded"  # valid event after the end of the run date
FIRST_ROW = "first_row"


# --------------------------------------------------------------------------------------------------
# 1. parsing and validation
# --------------------------------------------------------------------------------------------------
def _is_blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _has_control(c: Column) -> Column:
    return F.coalesce(c.rlike(CONTROL_RE), F.lit(False))


def _time_checks(seconds: Column, iso_ts: Column, time_kind: str) -> tuple[Column, Column]:
    """(reason or null, microseconds since the epoch or null) from a time string's two readings."""
    epoch_reason = (
        F.when(seconds.isNull(), F.lit(UNPARSABLE_TIMESTAMP))
        .when(F.isnan(seconds) | (F.abs(seconds) == float("inf")), F.lit(NON_FINITE_TIMESTAMP))
        .when(seconds < 0, F.lit(NEGATIVE_TIMESTAMP))
        .when(seconds > MAX_EPOCH_SECONDS, F.lit(TIMESTAMP_OUT_OF_RANGE))
    )
    # Guarded by the reason: casting NaN or a huge double to long fails under ANSI mode.
    epoch_us = F.when(epoch_reason.isNull(), F.round(seconds * 1_000_000).cast("long"))
    iso_us = F.unix_micros(iso_ts)
    iso_reason = F.when(iso_ts.isNull(), F.lit(UNPARSABLE_TIMESTAMP)).when(
        iso_us < 0, F.lit(NEGATIVE_TIMESTAMP)
    )
    if time_kind == "epoch":
        return epoch_reason, epoch_us
    if time_kind == "iso":
        return iso_reason, iso_us
    numeric = seconds.isNotNull()
    return (
        F.when(numeric, epoch_reason).otherwise(iso_reason),
        F.when(numeric, epoch_us).otherwise(iso_us),
    )


_KEEP = [S.FILE_IDX, S.BLOCK_START, S.ROW_IN_BLOCK]


def _validated(fields: DataFrame, time_kind: str) -> DataFrame:
    """Checks and typed time for rows of ``_user, _item, _name, _time, _utf8_ok, _well_formed, _raw``.

    Each stage is its own projection so that Spark computes every intermediate value once per row;
    each time string is only read the ways its kind allows (a failing cast is costly).
    """
    text = F.col("_text")
    seconds = text.try_cast("double")
    if time_kind == "auto":
        seconds = F.when(text.rlike(NUMERIC_RE), seconds)
    iso = F.when(text.rlike(ISO_8601_RE), text.try_cast("timestamp"))
    if time_kind == "auto":
        iso = F.when(F.col("_seconds").isNull(), iso)
    df = fields.select(
        *_KEEP, "_user", "_item", "_name", "_utf8_ok", "_well_formed", "_raw", F.trim("_time").alias("_text")
    )
    df = df.select("*", (seconds if time_kind != "iso" else F.lit(None).cast("double")).alias("_seconds"))
    df = df.select("*", (iso if time_kind != "epoch" else F.lit(None).cast("timestamp")).alias("_iso"))
    time_reason, ts_us = _time_checks(F.col("_seconds"), F.col("_iso"), time_kind)
    reason = (
        F.when(~F.col("_utf8_ok"), F.lit(INVALID_UTF8))
        .when(~F.col("_well_formed"), F.lit(WRONG_COLUMN_COUNT))
        .when(_is_blank(F.col("_user")), F.lit(EMPTY_USER))
        .when(_is_blank(F.col("_item")), F.lit(EMPTY_ITEM))
        .when(_has_control(F.col("_user")) | _has_control(F.col("_item")) | _has_control(F.col("_name")),
              F.lit(CONTROL_CHARACTER))
        .otherwise(time_reason)
    )
    df = df.select(*_KEEP, "_user", "_item", "_name", "_raw", reason.alias(C.REASON), ts_us.alias("_ts"))
    good = F.col(C.REASON).isNull()
    return df.select(
        *_KEEP,
        F.when(good, F.col("_user")).alias(S.USER_KEY_RAW),
        F.when(good, F.col("_item")).alias(S.ITEM_KEY_RAW),
        F.when(good, F.col("_name")).alias(S.ITEM_NAME_RAW),
        F.when(good, F.col("_ts")).alias(S.TS_US),
        # The raw line is kept for quarantined rows only, repaired so it can be stored as UTF-8.
        F.when(~good, F.make_valid_utf8("_raw")).alias(C.RAW_RECORD),
        C.REASON,
    )


# Characters a one-character regex must escape (java.lang.String.split's own list).
_REGEX_META = ".$|()[{^?*+\\"


def _literal_pattern(delimiter: str) -> str:
    """A Java regex matching ``delimiter`` literally. A single character is given bare or escaped with a
    backslash: String.split (behind Spark's ``split``) then splits without compiling a regex for every
    row (about 2 CPU seconds per million lines); longer delimiters are quoted (``\\Q...\\E``)."""
    if len(delimiter) == 1:
        return "\\" + delimiter if delimiter in _REGEX_META else delimiter
    return "\\Q" + delimiter + "\\E"


def parse_text_lines(lines: DataFrame, layout: TextLayout) -> DataFrame:
    """Parse raw lines (:data:`jobs.schemas.LINE_SCHEMA`) into :data:`jobs.schemas.PARSED_SCHEMA` rows.

    Fields are split on the literal delimiter (no quoting rules beyond ``strip_quotes``).
    """
    split = lines.select(
        *_KEEP,
        F.col("value").alias("_raw"),
        F.split("value", _literal_pattern(layout.delimiter), -1).alias("_parts"),
        F.is_valid_utf8("value").alias("_utf8_ok"),
    )

    def field_at(pos: int) -> Column:
        raw = F.try_element_at(F.col("_parts"), F.lit(pos + 1))
        return F.regexp_replace(raw, r'^"(.*)"$', "$1") if layout.strip_quotes else raw

    fields = split.select(
        *_KEEP,
        "_raw",
        "_utf8_ok",
        (F.size("_parts") == layout.n_columns).alias("_well_formed"),
        field_at(layout.user_pos).alias("_user"),
        field_at(layout.item_pos).alias("_item"),
        field_at(layout.time_pos).alias("_time"),
        (field_at(layout.name_pos) if layout.name_pos is not None else F.lit(None)).alias("_name"),
        (field_at(layout.item_fallback_pos) if layout.item_fallback_pos is not None else F.lit(None)).alias(
            "_alt"
        ),
    )
    item = F.col("_item")
    if layout.item_fallback_pos is not None:
        # e.g. Last.fm: the artist name stands in for a missing MBID (never one shared empty item).
        item = F.when(_is_blank(item), F.col("_alt")).otherwise(item)
    name = F.col("_name") if layout.name_pos is not None else item
    return _validated(fields.withColumn("_item", item).withColumn("_name", name), layout.time_kind)


def parse_rows(
    rows: DataFrame, user_col: str, item_col: str, time_col: str, name_col: str | None = None
) -> DataFrame:
    """Validate typed rows (e.g. from Parquet) carrying file_idx, block_start, row_in_block and data columns.

    Every data column is compared as a string, so numeric ids and native timestamps work as well.
    """
    data_cols = [c for c in rows.columns if c not in _KEEP]
    as_text = {c: F.col(c).cast("string") for c in {user_col, item_col, time_col, name_col} if c}
    utf8_ok = F.lit(True)
    for c in as_text.values():
        utf8_ok = utf8_ok & F.coalesce(F.is_valid_utf8(c), F.lit(True))
    fields = rows.select(
        *_KEEP,
        as_text[user_col].alias("_user"),
        as_text[item_col].alias("_item"),
        (as_text[name_col] if name_col else as_text[item_col]).alias("_name"),
        as_text[time_col].alias("_time"),
        utf8_ok.alias("_utf8_ok"),
        F.lit(True).alias("_well_formed"),
        F.to_json(F.struct(*[F.col(c) for c in data_cols])).alias("_raw"),
    )
    return _validated(fields, "auto")


# --------------------------------------------------------------------------------------------------
# 2. line numbers
# --------------------------------------------------------------------------------------------------
def row_summary(marked: DataFrame) -> DataFrame:
    """Per (file_idx, block_start, reason, excluded): rows and first row id, for :func:`mark_excluded`
    rows. Small (file splits x reasons); one pass gives both the line numbers (:func:`summary_blocks`)
    and the accounting (:func:`summary_counts`)."""
    return marked.groupBy(S.FILE_IDX, S.BLOCK_START, C.REASON, EXCLUDED).agg(
        F.count(F.lit(1)).alias("n"), F.min(S.ROW_IN_BLOCK).alias(FIRST_ROW)
    )


# (file_idx, block_start, reason, excluded, n, first_row): a collected row of row_summary()
SummaryRow = tuple[int | None, int, str | None, bool, int, int]


def summary_blocks(summary: list[SummaryRow]) -> list[tuple[int | None, int, int, int]]:
    """(file_idx, block_start, n, first_row) per block, as :func:`block_sizes` gives, from the summary."""
    blocks: dict[tuple[int | None, int], tuple[int, int]] = {}
    for file_idx, block_start, _, _, n, first in summary:
        before = blocks.get((file_idx, block_start))
        blocks[(file_idx, block_start)] = (n, first) if before is None else (before[0] + n, min(before[1], first))
    return [(f, b, n, first) for (f, b), (n, first) in blocks.items()]


def summary_counts(summary: list[SummaryRow], has_header: bool) -> dict[str, Any]:
    """raw_rows, quarantined_rows, excluded_after_run_date and quarantine_reasons (every reason of
    :data:`REASONS`, in order) from the summary; with ``has_header`` the first line of each file
    (the first row of its block at offset 0) is not a data row and is not counted."""
    counts = {(r[0], r[1], r[2], r[3]): r[4] for r in summary}
    if has_header:
        first_block = [r for r in summary if r[1] == 0]
        for file_idx in {r[0] for r in first_block}:
            head = min((r for r in first_block if r[0] == file_idx), key=lambda r: r[5])
            counts[head[:4]] -= 1
    reasons = {reason: 0 for reason in REASONS}
    after = 0
    for (_, _, reason, excluded), n in counts.items():
        if reason is not None:
            reasons[reason] += n
        elif excluded:
            after += n
    return {
        "raw_rows": sum(counts.values()),
        "quarantined_rows": sum(reasons.values()),
        "excluded_after_run_date": after,
        "quarantine_reasons": reasons,
    }


def block_offsets(sizes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(file_idx, block_start, first_row, lines of the file before the block) from collected block sizes.

    ``sizes`` holds (file_idx, block_start, n, first_row) rows of :func:`block_sizes`; the result is
    meant for :func:`number_rows`.
    """
    offsets, before, current = [], 0, None
    for file_idx, block_start, n, first_row in sorted(sizes):
        if file_idx != current:
            before, current = 0, file_idx
        offsets.append((file_idx, block_start, first_row, before))
        before += n
    return offsets


def lookup(pairs: dict, key: Column) -> Column:
    """Value of ``key`` in a small literal map (a plan constant: no join, no broadcast job)."""
    if not pairs:
        return F.lit(None)
    entries = []
    for k, v in pairs.items():
        entries += [F.lit(k), F.lit(v)]
    return F.element_at(F.create_map(*entries), key)


def number_rows(parsed: DataFrame, offsets: list[tuple[int, int, int, int]]) -> DataFrame:
    """Add ``line_number`` (1-based within the file) and ``seq`` (file, then line) to parsed rows.

    ``offsets`` comes from :func:`block_offsets`.
    """
    block = F.concat_ws(":", S.FILE_IDX, S.BLOCK_START)
    first_row = lookup({f"{f}:{b}": first for f, b, first, _ in offsets}, block)
    before = lookup({f"{f}:{b}": n for f, b, _, n in offsets}, block)
    line = before.cast("long") + F.col(S.ROW_IN_BLOCK) - first_row.cast("long") + 1
    return (
        parsed.withColumn(C.LINE_NUMBER, line)
        .withColumn(S.SEQ, F.col(S.FILE_IDX).cast("long") * SEQ_FILE_SHIFT + F.col(C.LINE_NUMBER))
        .drop(S.BLOCK_START, S.ROW_IN_BLOCK)
    )


# --------------------------------------------------------------------------------------------------
# 3. run-date cut-off
# --------------------------------------------------------------------------------------------------
def mark_excluded(numbered: DataFrame, end_us: int | None) -> DataFrame:
    """Flag valid events at or after ``end_us`` (the end of the run date, exclusive); None flags none."""
    flag = F.lit(False) if end_us is None else F.col(C.REASON).isNull() & (F.col(S.TS_US) >= F.lit(end_us))
    return numbered.withColumn(EXCLUDED, flag)


# --------------------------------------------------------------------------------------------------
# 4. the rules of docs/design.md §3.1
# --------------------------------------------------------------------------------------------------
def sessionize(events: DataFrame, rules: SessionRules) -> DataFrame:
    """Apply the sessionization rules to valid events (``user_key, item_key, ts_us, seq``; an
    ``item_name`` column is carried along unchanged).

    Returns one row per input event with ``raw_session`` (session after rule 1), ``raw_position``
    (position in it after rule 2; null for collapsed repeats), ``fate`` (one of
    :data:`FATES`) and, for kept events, ``session_index``, ``position``, ``is_continuation``,
    ``gap_before_seconds``, ``n_sessions`` and ``is_train`` (nulls for removed events). Events of a
    user are ordered by time, ties by ``seq`` (input order).

    Four window operators and two sorts of the user's events: two in time order (rules 1-2 and
    running counts), two over whole raw sessions (ordered by ``raw_session`` only, range frames:
    what a session and the sessions before it hold). Every other figure is derived from those.
    """
    L = rules.max_session_length
    user, ts, seq = F.col(S.USER_KEY_RAW), F.col(S.TS_US), F.col(S.SEQ)
    in_time = Window.partitionBy(user).orderBy(ts, seq)
    running = in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)

    # Rule 1: a gap strictly larger than the threshold starts a session (integer microseconds: exact).
    gap_us = int(round(rules.session_gap_seconds * 1_000_000))
    prev_ts = F.lag(ts).over(in_time)
    starts = prev_ts.isNull() | ((ts - prev_ts) > F.lit(gap_us))
    # Rule 2: a repeat of the previous event's item inside the same session.
    repeat = ~starts & (F.col(S.ITEM_KEY_RAW) == F.lag(S.ITEM_KEY_RAW).over(in_time))
    # the item's display name, when given, only rides along (items() takes it from the labeled rows)
    carried = [c for c in (S.ITEM_NAME_RAW,) if c in events.columns]
    df = events.select(
        S.USER_KEY_RAW, S.ITEM_KEY_RAW, S.TS_US, S.SEQ, *carried, starts.alias("_start"), repeat.alias("_repeat")
    )
    # Running counts in time order: sessions started (raw_session), non-repeats so far (positions
    # and lengths after rule 2 count non-repeats only) and the time the session started.
    nonrep = (~F.col("_repeat")).cast("int")
    df = df.select(
        "*",
        (F.sum(F.col("_start").cast("int")).over(running) - 1).cast("int").alias(RAW_SESSION),
        F.sum(nonrep).over(running).alias("_cum"),
        F.last(F.when(F.col("_start"), ts), ignorenulls=True).over(running).alias("_start_ts"),
    )

    # Rules 3 and 4 per raw session: the non-repeats of the sessions before (range frames over
    # raw_session: order-free sums, so the order of events within a session does not matter here).
    by_session = Window.partitionBy(user).orderBy(RAW_SESSION)
    before = by_session.rangeBetween(Window.unboundedPreceding, -1)
    through = by_session.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    df = df.select(
        "*",
        F.coalesce(F.sum(nonrep).over(before), F.lit(0)).alias("_before"),
        F.sum(nonrep).over(through).alias("_through"),
    )
    df = df.select(
        *[c for c in df.columns if c not in ("_cum", "_before", "_through")],
        (F.col("_cum") - F.col("_before") - 1).cast("int").alias("_pos"),  # first event: 0
        (F.col("_through") - F.col("_before")).alias("_len"),
    )
    chunk = F.floor(F.col("_pos") / L)
    chunk_len = F.least(F.lit(L), F.col("_len") - chunk * L)
    fate = (
        F.when(F.col("_repeat"), F.lit(COLLAPSED_REPEAT))
        .when(F.col("_len") < rules.min_session_length, F.lit(SHORT_SESSION))
        .when(F.col("_len") > 2 * L, F.lit(LONG_SESSION))
        .when(chunk_len < rules.min_session_length, F.lit(TRAILING_CHUNK))
    )
    df = df.withColumn("_fate4", fate).withColumn("_chunk", chunk.cast("int"))

    # Sessions after rule 4 = chunks. A kept event's chunks before it in its own session are all kept
    # (only a session's last chunk can be short), so its session index is the chunks kept in earlier
    # sessions plus its chunk number; its session's first chunk starts at the session's first event,
    # whose gap is to the last kept event of the earlier sessions (continuations: 0).
    kept4 = F.col("_fate4").isNull()
    chunk_start = (kept4 & (F.col("_pos") % L == 0)).cast("int")
    whole_user = by_session.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    df = df.select(
        "*",
        F.coalesce(F.sum(chunk_start).over(before), F.lit(0)).alias("_earlier"),
        F.sum(chunk_start).over(whole_user).alias("_chunks"),
        F.max(F.when(kept4, ts)).over(before).alias("_prev_kept_ts"),
    )
    session_index = F.when(kept4, F.col("_earlier") + F.col("_chunk")).cast("int")
    n_sessions = F.when(F.col("_chunks") > 0, F.col("_chunks")).cast("int")
    gap = F.when(F.col("_chunk") > 0, F.lit(0.0)).otherwise(
        (F.col("_start_ts") - F.col("_prev_kept_ts")) / 1_000_000.0
    )
    df = df.select("*", session_index.alias(C.SESSION_INDEX), n_sessions.alias(N_SESSIONS))

    # Rule 5 (users with too few sessions) and rule 6 (train/test by session index).
    final_fate = F.coalesce(
        F.col("_fate4"),
        F.when(F.col(N_SESSIONS) < rules.min_sessions_per_user, F.lit(DROPPED_USER)),
        F.lit(KEPT),
    )
    n_train = F.floor(F.col(N_SESSIONS) * F.lit(rules.train_fraction))
    survived = F.col(FATE).isin(KEPT, DROPPED_USER)  # past rule 4
    return df.select(
        S.USER_KEY_RAW,
        S.ITEM_KEY_RAW,
        S.TS_US,
        S.SEQ,
        *carried,
        RAW_SESSION,
        F.when(~F.col("_repeat"), F.col("_pos").cast("int")).alias(RAW_POSITION),
        final_fate.alias(FATE),
        F.when(kept4, gap).alias(C.GAP_BEFORE_SECONDS),
        C.SESSION_INDEX,
        N_SESSIONS,
        "_pos",
        "_chunk",
    ).select(
        S.USER_KEY_RAW,
        S.ITEM_KEY_RAW,
        S.TS_US,
        S.SEQ,
        *carried,
        RAW_SESSION,
        RAW_POSITION,
        FATE,
        F.when(survived, F.col(C.SESSION_INDEX)).alias(C.SESSION_INDEX),
        F.when(survived, (F.col("_pos") % L).cast("short")).alias(C.POSITION),
        F.when(survived, F.col("_chunk") > 0).alias(C.IS_CONTINUATION),
        F.when(survived, F.col(C.GAP_BEFORE_SECONDS)).alias(C.GAP_BEFORE_SECONDS),
        F.when(survived, F.col(N_SESSIONS)).alias(N_SESSIONS),
        F.when(F.col(FATE) == KEPT, F.col(C.SESSION_INDEX) < n_train).alias(IS_TRAIN),
    )


# --------------------------------------------------------------------------------------------------
# 5. ids and output rows
# --------------------------------------------------------------------------------------------------
SESSION_OFFSET = "session_offset"


def build_users(kept: DataFrame) -> DataFrame:
    """users/ rows plus each user's first session_id: user ids dense 0..U-1 in user-key order.

    ``session_id = session_offset + session_index`` numbers sessions 0..S-1 in (user, time) order.
    Small (one row per user), computed in one partition.
    """
    per_user = kept.groupBy(S.USER_KEY_RAW).agg(F.max(N_SESSIONS).cast("long").alias("_n"))
    order = Window.orderBy(S.USER_KEY_RAW)
    return per_user.select(
        (F.row_number().over(order) - 1).cast("int").alias(C.USER_ID),
        F.col(S.USER_KEY_RAW).alias(C.USER_KEY),
        (F.sum("_n").over(order.rowsBetween(Window.unboundedPreceding, -1))).alias("_before"),
    ).select(C.USER_ID, C.USER_KEY, F.coalesce("_before", F.lit(0)).cast("long").alias(SESSION_OFFSET))


def build_items(labeled: DataFrame) -> DataFrame:
    """items/ rows from :func:`sessionize` rows carrying ``item_name``, in one aggregation: ids dense
    1..N in order of the item's first kept event (time, then input order), the name of the item's
    first valid event, train_count the item's train events. Items with no kept event are left out."""
    order = F.struct(S.TS_US, S.SEQ)
    kept = F.col(FATE) == KEPT
    per_item = labeled.groupBy(S.ITEM_KEY_RAW).agg(
        F.min(F.when(kept, order)).alias("_first"),
        F.min_by(S.ITEM_NAME_RAW, order).alias(S.ITEM_NAME_RAW),
        F.sum(F.when(kept, F.col(IS_TRAIN).cast("long"))).alias(C.TRAIN_COUNT),
    ).where(F.col("_first").isNotNull())
    return per_item.select(
        F.row_number().over(Window.orderBy("_first")).cast("int").alias(C.ITEM_ID),
        F.col(S.ITEM_KEY_RAW).alias(C.ITEM_KEY),
        F.col(S.ITEM_NAME_RAW).alias(C.ITEM_NAME),
        F.col(C.TRAIN_COUNT).cast("long").alias(C.TRAIN_COUNT),
    )


def build_events(kept: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Output rows (:data:`jobs.schemas.EVENT_SCHEMA` columns plus ``is_train``) of the kept events."""
    return (
        kept.join(F.broadcast(users.withColumnRenamed(C.USER_KEY, S.USER_KEY_RAW)), S.USER_KEY_RAW)
        .join(F.broadcast(items.select(C.ITEM_ID, F.col(C.ITEM_KEY).alias(S.ITEM_KEY_RAW))), S.ITEM_KEY_RAW)
        .select(
            F.col(C.USER_ID).cast("int").alias(C.USER_ID),
            (F.col(SESSION_OFFSET) + F.col(C.SESSION_INDEX)).cast("long").alias(C.SESSION_ID),
            F.col(C.SESSION_INDEX).cast("int").alias(C.SESSION_INDEX),
            F.col(C.POSITION).cast("short").alias(C.POSITION),
            F.col(C.ITEM_ID).cast("int").alias(C.ITEM_ID),
            F.timestamp_micros(S.TS_US).alias(C.EVENT_TIME),
            F.col(C.GAP_BEFORE_SECONDS).cast("double").alias(C.GAP_BEFORE_SECONDS),
            F.col(C.IS_CONTINUATION).cast("boolean").alias(C.IS_CONTINUATION),
            F.col(IS_TRAIN),
        )
    )
