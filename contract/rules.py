"""The sessionize job's knobs and input layouts as plain dataclasses (docs/design.md §2, §3), shared by
the Spark job (``jobs.sessionize``) and its pandas reference (``contract.reference``); no Spark import.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from contract import columns as C


class SessionizeError(RuntimeError):
    """The job refuses to publish: too many bad rows, no usable data, or broken accounting."""


class InputError(ValueError):
    """An input cannot be read as asked (missing path, bad header, missing or retyped column)."""


@dataclass(frozen=True)
class SessionRules:
    """The sessionization rules of docs/design.md §3.1 (defaults are the paper's)."""

    session_gap_seconds: float = field(
        default=3600.0, metadata={"help": "a gap LARGER than this (seconds) starts a new session"}
    )
    max_session_length: int = field(
        default=C.MAX_SESSION_LENGTH,
        metadata={"help": "L: sessions longer than L are cut into chunks of L; longer than 2L dropped"},
    )
    min_session_length: int = field(
        default=2, metadata={"help": "shorter sessions (and shorter trailing chunks) are dropped"}
    )
    min_sessions_per_user: int = field(
        default=3, metadata={"help": "users with fewer sessions (after chunking) are dropped"}
    )
    train_fraction: float = field(
        default=0.8, metadata={"help": "per user, the earliest floor(f * n) sessions go to train"}
    )

    def __post_init__(self) -> None:
        if not (self.session_gap_seconds > 0 and math.isfinite(self.session_gap_seconds)):
            raise ValueError(f"session_gap_seconds must be a positive number, got {self.session_gap_seconds}")
        if self.max_session_length < 2 or self.min_session_length < 1:
            raise ValueError("max_session_length must be >= 2 and min_session_length >= 1")
        if self.min_sessions_per_user < 1:
            raise ValueError("min_sessions_per_user must be >= 1")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")


@dataclass(frozen=True)
class TextLayout:
    """Where the fields of a delimited text line are (0-based column positions)."""

    delimiter: str = field(metadata={"help": "field separator (literal, not a regex)"})
    n_columns: int = field(metadata={"help": "exact number of fields of a well-formed line"})
    user_pos: int = field(metadata={"help": "column of the user key"})
    item_pos: int = field(metadata={"help": "column of the item key"})
    time_pos: int = field(metadata={"help": "column of the event time"})
    time_kind: str = field(
        default="auto", metadata={"help": "'epoch' seconds, 'iso' 8601, or 'auto' (numeric = epoch)"}
    )
    item_fallback_pos: int | None = field(
        default=None, metadata={"help": "column used as item key when the item column is empty"}
    )
    name_pos: int | None = field(
        default=None, metadata={"help": "column of the item's display name (default: the item key)"}
    )
    strip_quotes: bool = field(
        default=False, metadata={"help": "remove one pair of surrounding double quotes from each field"}
    )

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("the delimiter must not be empty")
        if self.time_kind not in ("epoch", "iso", "auto"):
            raise ValueError(f"time_kind must be 'epoch', 'iso' or 'auto', got {self.time_kind!r}")
        positions = [self.user_pos, self.item_pos, self.time_pos, self.item_fallback_pos, self.name_pos]
        if any(p is not None and not 0 <= p < self.n_columns for p in positions):
            raise ValueError(f"column positions {positions} must lie in 0..{self.n_columns - 1}")


LASTFM_LAYOUT = TextLayout(
    delimiter="\t", n_columns=6, user_pos=0, time_pos=1, item_pos=2, item_fallback_pos=3, name_pos=3,
    time_kind="iso",
)  # fmt: skip
REDDIT_LAYOUT = TextLayout(delimiter=",", n_columns=3, user_pos=0, item_pos=1, time_pos=2, time_kind="epoch")


@dataclass(frozen=True)
class EventsOptions:
    """Options of the generic ``events`` format (CSV/TSV text or Parquet)."""

    user_col: str = field(default="user_id", metadata={"help": "column with the user key"})
    item_col: str = field(default="item_id", metadata={"help": "column with the item key"})
    time_col: str = field(
        default="timestamp", metadata={"help": "column with the time: epoch seconds or ISO-8601"}
    )
    item_name_col: str | None = field(
        default=None, metadata={"help": "optional column with the item's display name"}
    )
    input_format: str = field(
        default="auto",
        metadata={"help": "'text' (delimited), 'parquet', or 'auto' (parquet when paths end in .parquet)"},
    )
    delimiter: str = field(
        default=",", metadata={"help": "field separator of text input (e.g. ',' or '\\t')"}
    )
    header: bool = field(
        default=True, metadata={"help": "text files start with a header line naming columns"}
    )
    column_names: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "names of the columns of header-less text (default: user, item, time columns)"},
    )

    def __post_init__(self) -> None:
        if self.input_format not in ("auto", "text", "parquet"):
            raise ValueError(f"input_format must be auto, text or parquet, got {self.input_format!r}")


def events_layout(options: EventsOptions, names: list[str]) -> TextLayout:
    """The :class:`TextLayout` of ``events`` text whose columns are ``names``."""

    def pos(name: str, what: str) -> int:
        if name not in names:
            raise InputError(f"{what} column {name!r} not among the input's columns {names}")
        return names.index(name)

    return TextLayout(
        delimiter=options.delimiter,
        n_columns=len(names),
        user_pos=pos(options.user_col, "user"),
        item_pos=pos(options.item_col, "item"),
        time_pos=pos(options.time_col, "time"),
        name_pos=pos(options.item_name_col, "item name") if options.item_name_col else None,
        time_kind="auto",
        strip_quotes=True,
    )


def header_fields(line: str | None, delimiter: str) -> list[str] | None:
    if line is None:
        return None
    return [f.strip().strip('"') for f in line.lstrip("\ufeff").split(delimiter)]


def check_headers(heads: list[tuple[str, str | None]], delimiter: str, expected: list[str] | None) -> list[str]:
    """Header columns shared by all files (``expected`` when given); a clear error names the odd file.

    ``heads`` holds (display path, first line or None for an empty file) per file, in input order.
    """
    found: list[str] | None = expected
    for display, line in heads:
        cols = header_fields(line, delimiter)
        if cols is None:
            continue
        if found is None:
            found = cols
        elif cols != found:
            raise InputError(f"{display}: header {cols} differs from the expected header {found}")
    if found is None:
        raise InputError("every input file is empty")
    return found


def run_settings(fmt: str, inputs: list[str], input_files: int, day: dt.date | None, max_bad_fraction: float,
                 rules: SessionRules, options: EventsOptions, gap: float) -> dict[str, Any]:
    """The settings a run records in ``stats.json`` beside its figures (the job and the reference alike)."""
    return {"format": fmt, "inputs": inputs, "input_files": input_files,
            "run_date": day.isoformat() if day else None, "max_bad_fraction": max_bad_fraction,
            "rules": asdict(rules), "format_options": asdict(options) if fmt == "events" else {},
            "session_gap_seconds": gap}
