"""Publishing the nightly tables to DuckDB (embedded default) or PostgreSQL (``THRNN_WAREHOUSE_URL``).

One night of one dataset is replaced atomically: DELETE (dataset, run_date) + INSERT in one
transaction, so a reader sees the previous night or the new one, never a mix, and earlier nights are
kept. Identifiers are fixed in this module and in ``sql/``; values are always bound parameters (or
a registered Arrow frame / COPY stream), never SQL text.

DuckDB allows one writer process per file and a read-write holder locks everyone else out. The
publisher therefore never writes the live file: it copies it to a staging file beside it, publishes
there, checkpoints, and swaps it in with ``os.replace``. Readers (who must open the file read-only)
never meet a lock or a half-written file; a reader that had the old file open keeps reading the old
night. DuckDB shares one database instance between the connections of a process to the same file, so
a process sees the new night only once every connection it had to the file is closed. Concurrent
publishers are serialised with a lock file; staging files of publishers that died are removed by the
next publish. Cost: one file copy per publish.

``publish(..., verify=fn)`` calls ``fn`` with a reader of the open transaction after the rows are
written and before the commit: a night ``fn`` refuses (by raising) is never visible, the previous
night stays.

Tables created by an older DDL are brought up to date by :func:`migrate` inside the publishing
transaction (columns added, backfilled, constraints relaxed), so existing warehouses keep working.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# A staging copy older than this is a leftover even when its pid is alive (pid reused, another host)
STALE_STAGING_SECONDS = 6 * 3600

RECOMMENDATIONS = "recommendations"
CHURN_RISK = "churn_risk"
MODEL_RUNS = "model_runs"

SOURCE = "source"  # recommendations: thrnn-<dataset>/<version> or the baseline's name
RECOMMENDATIONS_SOURCE = "recommendations_source"  # model_runs: the night's recommendations.source
BEST_BASELINE = "best_baseline"
# model_runs columns of the best baseline's figures, by metric key of the evaluation
BASELINE_FIGURE_COLUMNS = {
    "recall@20": "baseline_recall_at_20",
    "mrr@20": "baseline_mrr_at_20",
    "first_item_recall@20": "baseline_first_item_recall_at_20",
    "first_item_mrr@20": "baseline_first_item_mrr_at_20",
}
RECOMMENDATION_COLUMNS = [
    "run_date", "dataset", "user_key", "rank", "item_key", "item_name", "score", "model_name", "model_version",
    SOURCE,
]
CHURN_COLUMNS = [
    "run_date", "dataset", "user_key", "last_session_end", "elapsed_hours", "expected_return_hours",
    "median_return_hours", "expected_return_at", "p_no_return", "p_return_1d", "p_return_7d", "p_return_30d",
    "churn_risk", "risk_bucket", "model_name", "model_version",
]
MODEL_RUN_COLUMNS = [
    "run_date", "dataset", "model_name", "model_version", "mlflow_run_id",
    "recall_at_5", "recall_at_10", "recall_at_20", "mrr_at_5", "mrr_at_10", "mrr_at_20",
    "first_item_recall_at_20", "first_item_mrr_at_20", "mae_hours", "mae_hours_mean", "n_targets", "n_gaps",
    "champion_version_before", "promoted", "decision", "scored_with_version", "users", "train_events",
    "test_events", "recommendation_rows", "churn_rows", "sessionize_seconds", "train_seconds",
    "evaluate_seconds", "score_seconds", RECOMMENDATIONS_SOURCE, "serving", BEST_BASELINE,
    *BASELINE_FIGURE_COLUMNS.values(),
]
TABLE_COLUMNS: dict[str, list[str]] = {
    RECOMMENDATIONS: RECOMMENDATION_COLUMNS,
    CHURN_RISK: CHURN_COLUMNS,
    MODEL_RUNS: MODEL_RUN_COLUMNS,
}
# Primary keys, used to return rows in a stable order.
TABLE_ORDER: dict[str, list[str]] = {
    RECOMMENDATIONS: ["dataset", "run_date", "user_key", "rank"],
    CHURN_RISK: ["dataset", "run_date", "user_key"],
    MODEL_RUNS: ["dataset", "run_date"],
}
TIMESTAMP_COLUMNS = {"last_session_end", "expected_return_at"}
# Columns added after the first release, per table: (column, type, backfill of existing rows or None).
# A backfilled column becomes NOT NULL once filled (as in sql/ddl); the others stay nullable.
ADDED_COLUMNS: dict[str, list[tuple[str, str, str | None]]] = {
    RECOMMENDATIONS: [(SOURCE, "VARCHAR", "model_name || '/' || CAST(model_version AS VARCHAR)")],
    MODEL_RUNS: [(RECOMMENDATIONS_SOURCE, "VARCHAR", "model_name || '/' || CAST(scored_with_version AS VARCHAR)"),
                 ("serving", "VARCHAR", None), (BEST_BASELINE, "VARCHAR", None)]
    + [(c, "DOUBLE PRECISION", None) for c in BASELINE_FIGURE_COLUMNS.values()],
}
# NOT NULL constraints of the first release that were dropped since: a baseline night has no version
RELAXED_COLUMNS: dict[str, list[str]] = {RECOMMENDATIONS: ["model_version"]}


class PublishError(RuntimeError):
    """The frames to publish do not fit the tables (the message says which column/row), or the DuckDB
    file cannot be written (no permission, no space); the published nights stay as they were."""


def schema_statements(parts: Sequence[str] = ("ddl", "views")) -> list[str]:
    """DDL then views from ``sql/``, one statement each (comments removed)."""
    statements: list[str] = []
    for sub in parts:
        for path in sorted((SQL_DIR / sub).glob("*.sql")):
            text = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
            statements += [s.strip() for s in text.split(";") if s.strip()]
    return statements


def migrate(run: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]) -> list[str]:
    """Bring tables created by an older ``sql/ddl`` up to date; return the statements it ran.

    ``run(sql, params)`` executes one statement (``?`` placeholders) and returns its rows. Idempotent:
    on current tables it only reads ``information_schema``. Runs after the DDL and before the views
    (``SELECT *`` views pick the new columns up when they are re-created).
    """
    done: list[str] = []

    def do(sql: str) -> None:
        run(sql, [])
        done.append(sql)

    for table in TABLE_COLUMNS:
        rows = run("SELECT column_name, is_nullable FROM information_schema.columns "
                   "WHERE table_schema = current_schema() AND table_name = ?", [table])
        nullable = {str(name): str(flag).upper() == "YES" for name, flag in rows}
        for column, sql_type, backfill in ADDED_COLUMNS.get(table, []):
            if column in nullable:
                continue
            do(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            if backfill is not None:
                do(f"UPDATE {table} SET {column} = {backfill}")
                do(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
        for column in RELAXED_COLUMNS.get(table, []):
            if nullable.get(column) is False:
                do(f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL")
    return done


def _prepare(table: str, frame: pd.DataFrame, dataset: str, run_date: dt.date) -> pd.DataFrame:
    cols = TABLE_COLUMNS[table]
    missing = [c for c in cols if c not in frame.columns]
    extra = [c for c in frame.columns if c not in cols]
    if missing or extra:
        raise PublishError(f"{table}: columns do not match the table (missing {missing}, unexpected {extra})")
    out = frame[cols].copy()
    if len(out):
        bad_date = set(pd.to_datetime(out["run_date"]).dt.date) - {run_date}
        bad_ds = set(out["dataset"]) - {dataset}
        if bad_date or bad_ds:
            raise PublishError(
                f"{table}: every row must have run_date={run_date} and dataset={dataset!r}; "
                f"found run_date {sorted(map(str, bad_date))} dataset {sorted(bad_ds)}"
            )
    out["run_date"] = pd.Series([run_date] * len(out), index=out.index, dtype="object")
    for c in TIMESTAMP_COLUMNS & set(cols):
        out[c] = pd.to_datetime(out[c], utc=True)
    return out.reset_index(drop=True)


Verify = Callable[["Warehouse"], Any]


class Warehouse:
    """Common interface: :meth:`publish` one night, :meth:`query` with bound parameters."""

    url: str

    def publish(
        self, dataset: str, run_date: dt.date, frames: Mapping[str, pd.DataFrame], verify: Verify | None = None
    ) -> dict[str, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:  # pragma: no cover
        raise NotImplementedError

    def latest_night(self, dataset: str) -> dt.date | None:
        """The newest published run date of ``dataset`` (None: nothing published yet)."""
        try:
            tables = self.query("SELECT COUNT(*) FROM information_schema.tables "
                                "WHERE table_schema = current_schema() AND table_name = ?", [MODEL_RUNS])
        except FileNotFoundError:
            return None
        if not int(tables.iloc[0, 0]):
            return None
        newest = self.query(f"SELECT MAX(run_date) FROM {MODEL_RUNS} WHERE dataset = ?", [dataset]).iloc[0, 0]
        return None if newest is None or pd.isna(newest) else pd.Timestamp(newest).date()

    def read_night(self, table: str, dataset: str, run_date: dt.date) -> pd.DataFrame:
        """All rows of one night of ``table``, in primary-key order."""
        if table not in TABLE_COLUMNS:
            raise ValueError(f"unknown table {table!r}; known: {sorted(TABLE_COLUMNS)}")
        cols = ", ".join(TABLE_COLUMNS[table])
        order = ", ".join(TABLE_ORDER[table])
        return self.query(
            f"SELECT {cols} FROM {table} WHERE dataset = ? AND run_date = ? ORDER BY {order}",
            [dataset, run_date],
        )


def _frames(dataset: str, run_date: dt.date, frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    unknown = set(frames) - set(TABLE_COLUMNS)
    if unknown:
        raise PublishError(f"unknown table(s) {sorted(unknown)}; known: {sorted(TABLE_COLUMNS)}")
    return {t: _prepare(t, f, dataset, run_date) for t, f in frames.items()}


class _InTransaction(Warehouse):
    """Reads of a publisher's open transaction (what ``verify`` sees before the commit)."""

    def __init__(self, url: str, run: Callable[[str, Sequence[Any]], pd.DataFrame]) -> None:
        self.url, self._run = url, run

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self._run(sql, params)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class DuckDBWarehouse(Warehouse):
    """A DuckDB file; writes go to a staging copy that replaces the file atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.url = f"duckdb://{self.path}"

    def stale_staging(self, max_age_seconds: float = STALE_STAGING_SECONDS) -> list[Path]:
        """Staging files (and their WAL) of publishers that are gone: the pid is not alive, or the file is
        older than ``max_age_seconds``. Only meaningful under the writer lock, where no live publisher
        of this host has a staging file."""
        pattern = re.compile(rf"^\.{re.escape(self.path.name)}\.staging-(\d+)(\.wal)?$")
        now, out = time.time(), []
        for path in self.path.parent.iterdir():
            found = pattern.match(path.name)
            if found is None:
                continue
            pid = int(found.group(1))
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if pid == os.getpid() or not _pid_alive(pid) or age > max_age_seconds:
                out.append(path)
        return sorted(out)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # blocks until the other publisher is done
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(
        self, dataset: str, run_date: dt.date, frames: Mapping[str, pd.DataFrame], verify: Verify | None = None
    ) -> dict[str, int]:
        import duckdb

        try:
            return self._publish(dataset, run_date, frames, verify)
        except (OSError, duckdb.IOException) as exc:
            # no permission, no space: say which warehouse and night (the live file is untouched)
            raise PublishError(f"cannot publish {dataset} {run_date} to {self.path}: {exc}") from exc

    def _publish(
        self, dataset: str, run_date: dt.date, frames: Mapping[str, pd.DataFrame], verify: Verify | None
    ) -> dict[str, int]:
        import duckdb

        prepared = _frames(dataset, run_date, frames)
        with self._writer_lock():
            staging = self.path.with_name(f".{self.path.name}.staging-{os.getpid()}")
            for leftover in self.stale_staging():  # a killed publisher leaves a full copy behind
                log.warning("removing staging file %s of a publisher that is gone (%d bytes)", leftover,
                            leftover.stat().st_size if leftover.exists() else 0)
                leftover.unlink(missing_ok=True)
            try:
                if self.path.exists():
                    shutil.copy2(self.path, staging)
                    wal = Path(str(self.path) + ".wal")
                    if wal.exists():  # un-checkpointed writes of someone else: replayed on open
                        shutil.copy2(wal, str(staging) + ".wal")
                con = duckdb.connect(str(staging))
                try:
                    con.execute("SET TimeZone = 'UTC'")
                    for stmt in schema_statements(("ddl",)):
                        con.execute(stmt)
                    migrate(lambda sql, params: con.execute(sql, list(params)).fetchall())
                    for stmt in schema_statements(("views",)):
                        con.execute(stmt)
                    con.begin()
                    counts = {}
                    for table, frame in prepared.items():
                        con.execute(f"DELETE FROM {table} WHERE dataset = ? AND run_date = ?", [dataset, run_date])
                        con.register("_thrnn_frame", frame)
                        cols = ", ".join(TABLE_COLUMNS[table])
                        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _thrnn_frame")
                        con.unregister("_thrnn_frame")
                        counts[table] = len(frame)
                    if verify is not None:  # raising here closes without commit: the live file is untouched
                        verify(_InTransaction(self.url, lambda sql, params: con.execute(sql, list(params)).df()))
                    con.commit()
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
                with open(staging, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(staging, self.path)
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            finally:
                for leftover in (staging, Path(str(staging) + ".wal")):
                    leftover.unlink(missing_ok=True)
        return counts

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import duckdb

        if not self.path.exists():
            raise FileNotFoundError(f"warehouse {self.path} does not exist yet (nothing published)")
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql, list(params)).df()
        finally:
            con.close()


def _python_rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows of plain Python values (NaN/NaT -> None) for psycopg."""
    cols: list[list[Any]] = []
    for c in frame.columns:
        s = frame[c]
        if c in TIMESTAMP_COLUMNS:
            values = [None if pd.isna(v) else v.to_pydatetime() for v in s]
        else:
            values = [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else v for v in s.tolist()]
        cols.append(values)
    return list(zip(*cols, strict=True)) if cols else []


class PostgresWarehouse(Warehouse):
    """PostgreSQL: DELETE + COPY in one transaction (MVCC gives readers the old or the new night)."""

    # Serialises concurrent publishers and DDL (any constant works; this one spells "thrnn").
    ADVISORY_LOCK = 0x7468726E6E

    def __init__(self, url: str) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)

    def _connect(self):  # noqa: ANN202 - psycopg connection
        import psycopg

        return psycopg.connect(self.url, connect_timeout=10)

    def publish(
        self, dataset: str, run_date: dt.date, frames: Mapping[str, pd.DataFrame], verify: Verify | None = None
    ) -> dict[str, int]:
        prepared = _frames(dataset, run_date, frames)
        counts: dict[str, int] = {}
        with self._connect() as conn, conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [self.ADVISORY_LOCK])
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            for stmt in schema_statements(("ddl",)):
                cur.execute(stmt)

            def run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cur.execute(sql.replace("?", "%s"), list(params))
                return cur.fetchall() if cur.description else []

            migrate(run)
            for stmt in schema_statements(("views",)):
                cur.execute(stmt)
            for table, frame in prepared.items():
                cur.execute(f"DELETE FROM {table} WHERE dataset = %s AND run_date = %s", [dataset, run_date])
                cols = ", ".join(TABLE_COLUMNS[table])
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in _python_rows(frame):
                        copy.write_row(row)
                counts[table] = len(frame)
            if verify is not None:  # raising here rolls the transaction back
                verify(_InTransaction(self.url, lambda sql, params: _fetch(cur, sql, params)))
        return counts

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        with self._connect() as conn:
            cur = conn.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            return _fetch(cur, sql, params)


def _fetch(cur: Any, sql: str, params: Sequence[Any]) -> pd.DataFrame:
    cur.execute(sql.replace("?", "%s"), list(params))
    names = [d.name for d in cur.description] if cur.description else []
    return pd.DataFrame(cur.fetchall(), columns=names)


def connect(url: str) -> Warehouse:
    """Warehouse for ``duckdb:///path`` or ``postgresql://...``."""
    if url.startswith("duckdb://"):
        path = url[len("duckdb://"):]
        if not path:
            raise ValueError("duckdb URL needs a path: duckdb:///abs/path/warehouse.duckdb")
        return DuckDBWarehouse(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresWarehouse(url)
    raise ValueError(f"unsupported warehouse URL scheme in {url.split('://', 1)[0]!r}; use duckdb:// or postgresql://")
