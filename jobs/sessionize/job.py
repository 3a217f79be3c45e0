"""The sessionize job: raw interaction logs -> train/test Parquet splits (docs/design.md §2, §3).

:func:`run` is what the DAG and the CLI call. It wires the pure transforms of ``transforms.py`` to the
readers and writers of ``io.py``; intermediate results are materialised as Parquet inside the staging
folder so that the input is parsed once and the per-user windows run once.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contract import columns as C
from contract.constants import DEFAULT_GAP_SECONDS, FORMATS
from contract.rules import EventsOptions, SessionizeError, check_headers, events_layout, run_settings
from jobs import schemas as S
from jobs.sessionize import io
from jobs.sessionize import transforms as T

log = logging.getLogger(__name__)

REDDIT_HEADER = ",".join(S.REDDIT_COLUMNS)
SPLIT_COL = "_split"
WORK_DIR = "_work"  # intermediate Parquet inside the staging folder, removed before the swap


def _resolve_input_format(options: EventsOptions, inputs: list[str]) -> str:
    if options.input_format != "auto":
        return options.input_format
    is_parquet = [
        p.rstrip("/").endswith(".parquet") or (Path(p).is_dir() and any(Path(p).glob("*.parquet")))
        for p in inputs
    ]
    return "parquet" if all(is_parquet) else "text"


def _check_headers(
    heads: dict[int, str | None], files: list[io.InputFile], delimiter: str, expected: list[str] | None
) -> list[str]:
    """Header columns shared by all files (``expected`` when given); a clear error names the odd file."""
    return check_headers([(f.display, heads[f.file_idx]) for f in files], delimiter, expected)


def _end_of_day_us(run_date: dt.date) -> int:
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp()) * 1_000_000


def _as_date(run_date: str | dt.date | None) -> dt.date | None:
    if run_date is None or isinstance(run_date, dt.date) and not isinstance(run_date, dt.datetime):
        return run_date
    if isinstance(run_date, dt.datetime):
        return run_date.date()
    try:
        return dt.date.fromisoformat(run_date)
    except ValueError as exc:
        raise ValueError(f"run_date must be YYYY-MM-DD, got {run_date!r}") from exc


def _parse(
    spark: SparkSession, fmt: str, inputs: list[str], options: EventsOptions
) -> tuple[DataFrame, list[io.InputFile], bool]:
    """Parsed rows (PARSED_SCHEMA), the input files, and whether line 1 of every file is a header."""
    if fmt == "events" and _resolve_input_format(options, inputs) == "parquet":
        files = io.list_input_files(spark, inputs, "parquet")
        roles = {options.user_col: "user", options.item_col: "item", options.time_col: "time"}
        if options.item_name_col:
            roles.setdefault(options.item_name_col, "item name")
        rows = io.read_parquet_rows(spark, inputs, files, roles)
        parsed = T.parse_rows(
            rows, options.user_col, options.item_col, options.time_col, options.item_name_col
        )
        return parsed, files, False
    files = io.list_input_files(spark, inputs, "text")
    has_header = False
    if fmt == "lastfm":
        layout = T.LASTFM_LAYOUT
    elif fmt == "reddit":
        _check_headers(io.first_lines(spark, files), files, ",", S.REDDIT_COLUMNS)
        layout, has_header = T.REDDIT_LAYOUT, True
    else:
        if options.header:
            names = _check_headers(io.first_lines(spark, files), files, options.delimiter, None)
            has_header = True
        else:
            names = list(options.column_names or (options.user_col, options.item_col, options.time_col))
        layout = events_layout(options, names)
    return T.parse_text_lines(io.read_text_lines(spark, inputs, files), layout), files, has_header


def run(
    spark: SparkSession,
    fmt: str,
    inputs: list[str] | str,
    output: str | Path,
    session_gap_seconds: float | None = None,
    run_date: str | dt.date | None = None,
    max_bad_fraction: float = 0.01,
    rules: T.SessionRules | None = None,
    metrics: dict[str, Any] | None = None,
    **format_options: Any,
) -> dict[str, Any]:
    """Sessionize ``inputs`` of format ``fmt`` into ``output`` (docs/design.md §3.3); return the stats.

    :param fmt: ``lastfm``, ``reddit`` or ``events``.
    :param inputs: files, folders or globs (gzip is fine); ties in time keep this order, then line order.
    :param output: local folder, replaced atomically.
    :param session_gap_seconds: gap above which a new session starts (default 3600 lastfm/events, 1800 reddit).
    :param run_date: events after the end of this UTC day are left out and counted (for backfills).
    :param max_bad_fraction: fail when more than this fraction of the raw rows is quarantined.
    :param rules: the other sessionization rules (L, min lengths, train fraction); default: the
        documented ones (docs/design.md §3.1).
    :param metrics: when given, filled with ``spark_jobs`` (the Spark jobs the run triggered) and
        ``phases`` (seconds and Spark jobs of each step); nothing of it goes into stats.json.
    :param format_options: :class:`EventsOptions` fields for the ``events`` format.
    :raises SessionizeError: too many bad rows, nothing left, or accounting that does not add up.
    """
    started = time.monotonic()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if format_options and fmt != "events":
        raise ValueError(f"format options {sorted(format_options)} apply to the events format only")
    options = EventsOptions(**format_options)
    inputs = [inputs] if isinstance(inputs, str) else [str(p) for p in inputs]
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    gap = float(session_gap_seconds) if session_gap_seconds is not None else DEFAULT_GAP_SECONDS[fmt]
    rules = T.SessionRules(**{**asdict(rules or T.SessionRules()), "session_gap_seconds": gap})
    day = _as_date(run_date)
    for path in inputs:
        io.check_path_text("input", path)
    io.check_path_text("output", str(output))
    out = io.local_path(output)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    log.info("sessionize %s %s -> %s (gap %.0f s, run date %s)", fmt, inputs, out, gap, day)

    try:
        return _run(spark, fmt, inputs, out, day, gap, rules, options, max_bad_fraction, started, metrics)
    except Exception as exc:
        if isinstance(exc, (io.InputError, io.OutputError, SessionizeError)):
            raise
        failure = io.read_failure(exc) or io.write_failure(exc, out)
        if failure is None:
            raise
        # one line for the operator; Spark's Java trace only in the debug log
        log.debug("Spark failed to read an input or write the output", exc_info=True)
        raise failure from exc


def _run(
    spark: SparkSession, fmt: str, inputs: list[str], out: Path, day: dt.date | None, gap: float,
    rules: T.SessionRules, options: EventsOptions, max_bad_fraction: float, started: float,
    metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    progress = _Progress(spark)
    cached: list[DataFrame] = []
    try:
        with io.staging_dir(out) as staging:
            stats = _phases(spark, fmt, inputs, staging, day, gap, rules, options, max_bad_fraction, progress,
                            cached)  # fmt: skip
            stats.update(elapsed_seconds=round(time.monotonic() - started, 3))
            io.write_stats(stats, staging / C.STATS_FILE)
    finally:
        for df in cached:
            df.unpersist()
        progress.close()
        if metrics is not None:
            metrics.update(progress.metrics())
    log.info("sessionize done in %.1f s (%d Spark jobs): %s", time.monotonic() - started, progress.jobs,
             {k: stats[k] for k in ("users", "sessions", "events", "items")})  # fmt: skip
    return stats


def _phases(
    spark: SparkSession, fmt: str, inputs: list[str], staging: Path, day: dt.date | None, gap: float,
    rules: T.SessionRules, options: EventsOptions, max_bad_fraction: float, progress: _Progress,
    cached: list[DataFrame],
) -> dict[str, Any]:
    """The job's steps. Large intermediates read more than once are stored as Parquet in the staging
    folder (parsed once, windows run once; cheaper than Spark's cache here), small ones cached (and
    listed in ``cached``)."""

    def cache(df: DataFrame) -> DataFrame:
        cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return df

    def stored(df: DataFrame, name: str) -> DataFrame:
        io.write_parquet(df, staging / WORK_DIR / name)
        return io.read_parquet(spark, staging / WORK_DIR / name, df.schema)  # schema given: no inference job

    with progress.phase("parse and count"):  # 1-3. parse once; line numbers and counts in one pass
        parsed, files, has_header = _parse(spark, fmt, inputs, options)
        marked = stored(T.mark_excluded(parsed, _end_of_day_us(day) if day else None), "parsed")
        summary = [tuple(r) for r in T.row_summary(marked).collect()]
        if any(row[0] is None for row in summary):  # a file path Spark reports differently than it lists
            raise io.InputError(f"could not match the rows read to the input files {[f.uri for f in files]}")
        numbered = T.number_rows(marked, T.block_offsets(T.summary_blocks(summary)))
        if has_header:
            numbered = numbered.where(F.col(C.LINE_NUMBER) > 1)
        counts = T.summary_counts(summary, has_header)
        log.info("%d raw rows: %d quarantined %s, %d after the run date", counts["raw_rows"],
                 counts["quarantined_rows"], {k: v for k, v in counts["quarantine_reasons"].items() if v},
                 counts["excluded_after_run_date"])  # fmt: skip
        _check_bad_fraction(counts, max_bad_fraction, numbered, files, day)  # before any heavy work
    with progress.phase("write quarantine"):
        source = T.lookup(io.source_files(files), F.col(S.FILE_IDX)).alias(C.SOURCE_FILE)
        quarantine = numbered.where(F.col(C.REASON).isNotNull()).select("*", source)
        io.write_parquet(
            quarantine.repartition(1).sortWithinPartitions(S.SEQ).select(*C.QUARANTINE_COLUMNS),
            staging / C.QUARANTINE_DIR,
        )
    with progress.phase("sessionize"):  # 4. the rules, once, with every event's fate
        valid = numbered.where(F.col(C.REASON).isNull() & ~F.col(T.EXCLUDED))
        events = valid.select(S.USER_KEY_RAW, S.ITEM_KEY_RAW, S.ITEM_NAME_RAW, S.TS_US, S.SEQ)
        labeled = stored(T.sessionize(events, rules), "labeled")
    with progress.phase("write users and items"):  # 5. ids (small: cached for writes and joins)
        kept = labeled.where(F.col(T.FATE) == T.KEPT)
        users = cache(T.build_users(kept))
        io.write_parquet(
            users.select(*C.USER_COLUMNS).coalesce(1).sortWithinPartitions(C.USER_ID), staging / C.USERS_DIR
        )
        items = cache(T.build_items(labeled))
        io.write_parquet(items.coalesce(1).sortWithinPartitions(C.ITEM_ID), staging / C.ITEMS_DIR)
    with progress.phase("write train and test"):
        _write_events(spark, T.build_events(kept, users, items), staging)
    with progress.phase("stats"):
        # items/ is one file written above: its row count is in the Parquet footer (no Spark job)
        stats = _stats(counts, labeled, n_items=io.parquet_rows(staging / C.ITEMS_DIR))
    stats.update(run_settings(fmt, inputs, len(files), day, max_bad_fraction, rules, options, gap))
    shutil.rmtree(staging / WORK_DIR)
    return stats


class _Progress:
    """Names the Spark jobs of each phase (Spark UI) and counts them, per phase and in all.

    Jobs are counted in the caller's job group when one is set, else in a group of the run's own
    (cleared at the end), through the status tracker: deterministic for a given input and settings.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._sc = spark.sparkContext
        self._group = self._sc.getLocalProperty("spark.jobGroup.id")
        self._own = self._group is None
        if self._own:
            self._group = f"thrnn-sessionize-{uuid.uuid4().hex[:12]}"
            self._sc.setLocalProperty("spark.jobGroup.id", self._group)
        self._before = self._count()
        self.jobs = 0
        self._phases: dict[str, dict[str, float]] = {}

    def _count(self) -> int:
        return len(self._sc.statusTracker().getJobIdsForGroup(self._group))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sc.setJobDescription(f"sessionize: {name}")
        t0, jobs0 = time.monotonic(), self._count()
        try:
            yield
        finally:
            self._sc.setJobDescription(None)  # type: ignore[arg-type]
            seconds, jobs = time.monotonic() - t0, self._count() - jobs0
            self._phases[name] = {"seconds": round(seconds, 3), "spark_jobs": jobs}
            self.jobs = self._count() - self._before
            log.info("%s: %.1f s (%d Spark jobs)", name, seconds, jobs)

    def close(self) -> None:
        self.jobs = self._count() - self._before
        if self._own:
            self._sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]

    def metrics(self) -> dict[str, Any]:
        return {"spark_jobs": self.jobs, "phases": self._phases}


def _check_bad_fraction(
    counts: dict[str, Any], max_bad_fraction: float, marked: DataFrame, files: list[io.InputFile],
    day: dt.date | None = None,
) -> None:
    raw, bad = counts["raw_rows"], counts["quarantined_rows"]
    if raw == 0:
        raise SessionizeError(f"the inputs hold no data rows ({len(files)} file(s))")
    after = counts["excluded_after_run_date"]
    if day is not None and after and raw == bad + after:
        # said at once, and as what it is: "no sessions left after the rules" hides a wrong run date
        first = marked.where(F.col(T.EXCLUDED)).agg(F.min(S.TS_US)).first()[0]
        raise SessionizeError(
            f"all {after} valid rows of the inputs are after the run date {day} (the earliest at "
            f"{dt.datetime.fromtimestamp(first / 1e6, dt.UTC):%Y-%m-%dT%H:%M:%SZ}); nothing to sessionize"
        )
    fraction = bad / raw
    counts["bad_fraction"] = fraction
    if fraction > max_bad_fraction:
        by_reason = {k: v for k, v in counts["quarantine_reasons"].items() if v}
        names = {f.file_idx: f.display for f in files}
        examples = [
            f"{names[r[S.FILE_IDX]]}:{r[C.LINE_NUMBER]} {r[C.REASON]}: {r[C.RAW_RECORD]!r:.120}"
            for r in marked.where(F.col(C.REASON).isNotNull()).orderBy(S.SEQ).limit(5).collect()
        ]
        raise SessionizeError(
            f"{bad} of {raw} rows ({fraction:.2%}) are malformed, above --max-bad-fraction "
            f"{max_bad_fraction:.2%}; by reason: {by_reason}; first ones:\n  " + "\n  ".join(examples)
        )


def _write_events(spark: SparkSession, events: DataFrame, staging: Path) -> None:
    """train/ and test/ in one pass: written partitioned by split, sorted, then moved into place."""
    work = staging / WORK_DIR / "events"
    split = F.when(F.col(T.IS_TRAIN), F.lit(C.TRAIN_DIR)).otherwise(F.lit(C.TEST_DIR)).alias(SPLIT_COL)
    ordered = events.select(*C.EVENT_COLUMNS, split).orderBy(
        SPLIT_COL, C.USER_ID, C.SESSION_INDEX, C.POSITION
    )
    ordered.write.mode("overwrite").partitionBy(SPLIT_COL).parquet(str(work))
    for name in (C.TRAIN_DIR, C.TEST_DIR):
        part = work / f"{SPLIT_COL}={name}"
        if part.exists():
            part.rename(staging / name)
        else:
            io.write_empty(spark, S.EVENT_SCHEMA, staging / name)


def _stats(counts: dict[str, Any], labeled: DataFrame, n_items: int) -> dict[str, Any]:
    """stats.json figures: one pass of counts over the labeled events (first events mark sessions)."""
    fate, pos = F.col(T.FATE), F.col(C.POSITION)
    kept, train = fate == T.KEPT, F.col(T.IS_TRAIN)
    raw_first = F.col(T.RAW_POSITION) == 0  # first event of a session after rules 1-2
    chunk_first = pos == 0  # first event of a session after rule 4
    measures = {
        "sessions_after_gap_rule": raw_first,
        "input_users": raw_first & (F.col(T.RAW_SESSION) == 0),
        "users": kept & chunk_first & (F.col(C.SESSION_INDEX) == 0),
        "dropped_short_sessions": (fate == T.SHORT_SESSION) & raw_first,
        "dropped_long_sessions": (fate == T.LONG_SESSION) & raw_first,
        "dropped_user_sessions": (fate == T.DROPPED_USER) & chunk_first,
        "train_sessions": kept & train & chunk_first,
        "test_sessions": kept & ~train & chunk_first,
        "train_events": kept & train,
        "test_events": kept & ~train,
        **{f"removed:{f}": fate == f for f in T.FATES if f != T.KEPT},
    }
    row = labeled.agg(
        *[F.count_if(F.coalesce(c, F.lit(False))).alias(k) for k, c in measures.items()]
    ).first()
    got = {k: int(row[k]) for k in measures}
    removed = {f: got[f"removed:{f}"] for f in T.FATES if f != T.KEPT}
    users = got["users"]
    sessions = got["train_sessions"] + got["test_sessions"]
    events = got["train_events"] + got["test_events"]
    stats: dict[str, Any] = {
        "raw_rows": counts["raw_rows"],
        "quarantined_rows": counts["quarantined_rows"],
        "excluded_after_run_date": counts["excluded_after_run_date"],
        "collapsed_repeats": removed[T.COLLAPSED_REPEAT],
        "dropped_short_sessions": got["dropped_short_sessions"],
        "dropped_long_sessions": got["dropped_long_sessions"],
        "dropped_trailing_chunks": removed[T.TRAILING_CHUNK],
        "dropped_users": got["input_users"] - users,
        "users": users,
        "sessions": sessions,
        "events": events,
        "items": n_items,
        "avg_session_length": events / sessions if sessions else 0.0,
        "sessions_per_user": sessions / users if users else 0.0,
        "train_sessions": got["train_sessions"],
        "test_sessions": got["test_sessions"],
        "train_events": got["train_events"],
        "test_events": got["test_events"],
        # Extras: where every raw row went (events removed by each rule) and the bad rows by reason.
        "events_removed_by_rule": removed,
        "sessions_after_gap_rule": got["sessions_after_gap_rule"],
        "dropped_user_sessions": got["dropped_user_sessions"],
        "quarantine_reasons": counts["quarantine_reasons"],
        "bad_fraction": counts.get("bad_fraction", 0.0),
        "valid_rows": counts["raw_rows"] - counts["quarantined_rows"] - counts["excluded_after_run_date"],
    }
    accounted = events + sum(removed.values()) + stats["excluded_after_run_date"] + stats["quarantined_rows"]
    stats["accounting_ok"] = accounted == stats["raw_rows"]
    if not stats["accounting_ok"]:
        raise SessionizeError(
            f"accounting does not add up: {accounted} accounted for, {stats['raw_rows']} raw rows"
        )
    if sessions == 0:
        raise SessionizeError("no sessions are left after the rules; nothing to train on")
    return stats
