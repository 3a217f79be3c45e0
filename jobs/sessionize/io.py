"""Reading inputs and writing outputs of the sessionize job; the transforms live in ``transforms.py``.

Inputs are read so that every row keeps where it came from: ``file_idx`` (input order, then path order
within a folder or glob) and, within the file, ``(block_start, row_in_block)``, from which
:func:`jobs.sessionize.transforms.number_rows` derives exact line numbers. Gzipped files are read
transparently (one task per file, as gzip cannot be split).

Outputs go to a sibling staging folder that is renamed into place at the end (:func:`staging_dir`), so
a crash midway leaves the previous output untouched.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from contract.rules import InputError
from jobs import schemas as S
from jobs.sessionize import transforms as T

log = logging.getLogger(__name__)


class OutputError(ValueError):
    """The output folder cannot be written (no permission, no space, a file in the way)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_path_text(what: str, path: str) -> None:
    """Refuse a path holding NUL or another control character: the OS cuts a path at NUL, Hadoop and
    the shell read line breaks as separators, so such a path never names what its author meant."""
    if _CONTROL.search(path):
        raise ValueError(f"{what} {path!r} holds a control character (NUL, line break, ...)")


# Parquet column types the events reader can read as a key or a time (a column compared as a string)
_KEY_TYPES = ("string", "varchar", "char", "tinyint", "smallint", "int", "bigint")
_TIME_TYPES = (*_KEY_TYPES, "float", "double", "decimal", "timestamp", "timestamp_ntz")


def _check_types(path: str, df: DataFrame, roles: dict[str, str]) -> None:
    """A clear error naming the column when a Parquet column has a type its role cannot hold (e.g. a
    boolean or date time column); otherwise every row would be quarantined with no word on why."""
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    for column, role in roles.items():
        kind = types[column].split("(")[0]
        allowed = _TIME_TYPES if role == "time" else _KEY_TYPES
        if kind not in allowed:
            raise InputError(
                f"input {path!r}: {role} column {column!r} has type {types[column]}; expected one of "
                f"{', '.join(allowed)}"
            )


@dataclass(frozen=True)
class InputFile:
    """One file to read: its index in input order, its URI as Spark lists it, a display path."""

    file_idx: int
    uri: str
    display: str


def _path_key(uri: str) -> str:
    """Comparable form of a file URI (Spark writes ``file:/x`` in one place and ``file:///x`` in another)."""
    parsed = urlparse(uri)
    return f"{parsed.scheme or 'file'}://{parsed.netloc}{parsed.path}"


def _display(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else uri


_GLOB_CHARS = re.compile(r"([\\*?\[\]{}])")


def spark_path(path: str) -> str:
    """``path`` as Spark should read it: Hadoop takes ``* ? [ ] { }`` as a glob, so a local file or
    folder that exists under its literal name (``raw[1].csv``) gets them escaped and is read as
    itself, not as whatever the pattern matches; anything else (a real glob, a URI) is left as given."""
    if "://" not in path and _GLOB_CHARS.search(path) and os.path.exists(path):
        return _GLOB_CHARS.sub(r"\\\1", path)
    return path


def _reader(spark: SparkSession, input_format: str, path: str) -> DataFrame:
    try:
        if input_format == "parquet":
            return spark.read.parquet(spark_path(path))
        return spark.read.text(spark_path(path))
    except AnalysisException as exc:
        raise InputError(f"cannot read input {path!r}: {str(exc).splitlines()[0]}") from exc


# Spark's message for a file it could not read (truncated gzip, corrupt Parquet, vanished file)
_FAILED_READ = re.compile(r"Encountered error while reading file (.+?)\.?\s+SQLSTATE|"
                          r"Encountered error while reading file (\S+)")
_CAUSE = re.compile(r"Caused by: ([\w.$]+(?:Exception|Error)[^\n]*)")


def read_failure(exc: BaseException) -> InputError | None:
    """An :class:`InputError` naming the file when ``exc`` (a Py4J or PySpark error of an action) is
    Spark failing to read an input file; None for any other failure."""
    text = str(exc)
    found = _FAILED_READ.search(text)
    if found is None:
        return None
    uri = (found.group(1) or found.group(2)).rstrip(".")
    cause = _CAUSE.search(text)
    why = cause.group(1).strip() if cause else text.strip().splitlines()[0][:200]
    return InputError(f"cannot read input file {_display(uri)}: {why}")


# Spark's (JVM) messages for an output it could not write
_WRITE_FAILURE = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system")


def write_failure(exc: BaseException, output: Path) -> OutputError | None:
    """An :class:`OutputError` naming ``output`` when ``exc`` is a failed write for lack of space (from
    Spark or from Python); None for any other failure."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                  errno.EPERM):
        return OutputError(f"cannot write the output folder {output}: {exc.strerror or exc}")
    found = _WRITE_FAILURE.search(str(exc))
    if found is None:
        return None
    return OutputError(f"cannot write the output folder {output}: {found.group(0)}")


def list_input_files(spark: SparkSession, inputs: list[str], input_format: str = "text") -> list[InputFile]:
    """Files behind ``inputs`` (files, folders or globs) in input order, then path order; each file once."""
    if not inputs:
        raise InputError("no --input given")
    files: list[InputFile] = []
    seen: dict[str, str] = {}
    for path in inputs:
        uris = sorted(_reader(spark, input_format, path).inputFiles(), key=_path_key)
        if not uris:
            raise InputError(f"input {path!r} holds no files")
        for uri in uris:
            key = _path_key(uri)
            if key in seen:
                raise InputError(f"file {_display(uri)} is named by two inputs ({seen[key]!r} and {path!r})")
            seen[key] = path
            files.append(InputFile(len(files), uri, _display(uri)))
    return files


def source_files(files: list[InputFile]) -> dict[int, str]:
    """file_idx -> display path, for the quarantine's ``source_file``."""
    return {f.file_idx: f.display for f in files}


def _with_origin(df: DataFrame, files: list[InputFile]) -> DataFrame:
    """Attach file_idx, block_start and row_in_block to rows straight from a file scan."""
    # Spark names a local file file:/x in _metadata and file:///x in inputFiles(): map both spellings.
    spellings = {}
    for f in files:
        key = _path_key(f.uri)
        spellings[key] = f.file_idx
        if key.startswith("file:///"):
            spellings["file:/" + key.removeprefix("file:///")] = f.file_idx
    index = T.lookup(spellings, F.col("_metadata.file_path"))
    return df.select(
        "*",
        index.cast("int").alias(S.FILE_IDX),
        F.col("_metadata.file_block_start").alias(S.BLOCK_START),
        # Increasing in read order within a file split: the row order inside each block.
        F.monotonically_increasing_id().alias(S.ROW_IN_BLOCK),
    )


def read_text_lines(spark: SparkSession, inputs: list[str], files: list[InputFile]) -> DataFrame:
    """Raw lines of text inputs as :data:`jobs.schemas.LINE_SCHEMA` rows (header lines included)."""
    frames = [_with_origin(spark.read.text(spark_path(path)), files) for path in inputs]
    lines = frames[0]
    for frame in frames[1:]:
        lines = lines.unionByName(frame)
    return lines.select(S.FILE_IDX, S.BLOCK_START, S.ROW_IN_BLOCK, "value")


def read_parquet_rows(
    spark: SparkSession, inputs: list[str], files: list[InputFile], roles: dict[str, str]
) -> DataFrame:
    """Rows of Parquet inputs (only the columns of ``roles``: column -> user, item, time or item name)
    with file_idx, block_start, row_in_block. Other columns are ignored."""
    columns = list(roles)
    frames = []
    for path in inputs:
        df = spark.read.parquet(spark_path(path))
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InputError(f"input {path!r} lacks column(s) {missing}; it has {df.columns}")
        _check_types(path, df, roles)
        frames.append(_with_origin(df.select(*columns), files))
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    return rows.select(S.FILE_IDX, S.BLOCK_START, S.ROW_IN_BLOCK, *columns)


def first_lines(spark: SparkSession, files: list[InputFile]) -> dict[int, str | None]:
    """First line of each text file (None for an empty file); reads only the head of each file."""
    heads: dict[int, str | None] = {}
    for f in files:
        rows = (
            spark.read.text(_display(f.uri) if urlparse(f.uri).scheme in ("", "file") else f.uri)
            .where(F.col("_metadata.file_block_start") == 0)
            .limit(1)
            .collect()
        )
        heads[f.file_idx] = rows[0]["value"] if rows else None
    return heads


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def local_path(path: str | os.PathLike[str]) -> Path:
    """A local folder from a path or ``file:`` URI; other schemes are refused with a clear message."""
    text = os.fspath(path)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        text = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise ValueError(f"output {text!r}: only local folders are supported for the atomic rename")
    return Path(text).absolute()


def write_parquet(df: DataFrame, path: Path) -> None:
    df.write.mode("overwrite").parquet(str(path))


def read_parquet(spark: SparkSession, path: Path, schema: StructType) -> DataFrame:
    """A Parquet folder this job wrote, read with its known schema (Spark runs no job to infer one)."""
    return spark.read.schema(schema).parquet(str(path))


def parquet_rows(path: Path) -> int:
    """Rows of a local Parquet folder, from the files' footers (no Spark job)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")))


def write_empty(spark: SparkSession, schema: StructType, path: Path) -> None:
    """A Parquet folder with the schema and no rows (keeps the layout whole when a part is empty)."""
    write_parquet(spark.createDataFrame([], schema).coalesce(1), path)


def write_stats(stats: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(stats, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


@contextmanager
def staging_dir(output: Path) -> Iterator[Path]:
    """Yield a fresh sibling staging folder; on success swap it in place of ``output``, else remove it.

    The swap is two renames on one file system: the old output is moved aside, the new one in, then
    the old one deleted. Readers see the old folder or the new one, never a half-written one.
    """
    token = uuid.uuid4().hex[:12]
    staging = output.parent / f"{output.name}.staging-{token}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:  # before any work: say which folder, not a traceback
        raise OutputError(f"cannot create the output folder {output}: {exc.strerror or exc}") from exc
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = output.parent / f"{output.name}.old-{token}"
    moved = False
    try:
        if output.exists():
            os.rename(output, old)
            moved = True
        os.rename(staging, output)
    except OSError as exc:  # the previous output stays (moved back when it was moved aside)
        if moved:
            os.rename(old, output)
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot publish the output folder {output}: {exc.strerror or exc}") from exc
    shutil.rmtree(old, ignore_errors=True)
    log.info("published %s", output)
