"""The parameters of one generated file (:class:`SynthConfig`) and the seeds of its random streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract import constants as C
from synth.profiles import PROFILES

FORMATS = C.TEXT_LOG_FORMATS

# Independent random streams: (seed, stream, ...) seeds numpy's SeedSequence.
STREAM_USERS = 1
STREAM_CATALOG = 2
STREAM_BLOCK = 3
STREAM_MALFORMED = 4


@dataclass
class SynthConfig:
    """Parameters of one generated file; ``None`` fields get defaults derived from ``n_events``."""

    fmt: str = field(default="lastfm", metadata={"help": "output format: lastfm (TSV) or reddit (CSV)"})
    n_events: int = field(default=100_000, metadata={"help": "valid events to write (exact)"})
    out: Path = field(default=Path("synthetic.tsv"), metadata={"help": "output file"})
    users: int | None = field(
        default=None, metadata={"help": "number of users; default events/400 (lastfm) or events/60 (reddit), at least min(events, 10)"}
    )
    items: int | None = field(
        default=None, metadata={"help": "catalogue size; default 3*sqrt(events) artists (lastfm) or 2*sqrt(events) subreddits (reddit)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed: the same seed and parameters give the same bytes"})
    start: str = field(default="2024-01-01", metadata={"help": "start of the time window (ISO date or datetime, UTC)"})
    days: float | None = field(default=None, metadata={"help": "length of the time window in days; default 365 (lastfm) or 30 (reddit)"})
    malformed_fraction: float = field(
        default=0.0, metadata={"help": "share of all data lines that are malformed (extra lines, every kind in turn)"}
    )
    gzip: bool | None = field(default=None, metadata={"help": "gzip the output; default: when the path ends in .gz"})
    block_events: int = field(
        default=1 << 16, metadata={"help": "events generated per block (bounds memory; part of what fixes the bytes)"}
    )
    max_user_events: int = field(default=200_000, metadata={"help": "most events one user may get"})
    progress: bool = field(default=False, metadata={"help": "show a progress bar"})

    def resolved(self) -> SynthConfig:
        """Validated copy with the derived defaults filled in; raises ValueError on bad input."""
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown format {self.fmt!r}; expected one of {FORMATS}")
        prof = PROFILES[self.fmt]
        n = positive_int("n_events", self.n_events)
        users = self.users
        if users is None:
            users = max(min(n, 10), round(n / prof.events_per_user), math.ceil(n / self.max_user_events))
        users = positive_int("users", users)
        if users > n:
            raise ValueError(f"users ({users}) cannot exceed events ({n}): every user has at least one event")
        if users * self.max_user_events < n:
            raise ValueError(
                f"{n} events over {users} users exceeds max_user_events={self.max_user_events} per user; "
                "raise --users or --max-user-events"
            )
        items = self.items
        if items is None:
            items = int(min(prof.max_default_items, max(10, round(prof.items_per_sqrt_event * math.sqrt(n)))))
        items = positive_int("items", items)
        days = prof.days if self.days is None else float(self.days)
        if not (math.isfinite(days) and days > 0):
            raise ValueError(f"days must be a positive number, got {self.days!r}")
        f = float(self.malformed_fraction)
        if not (0.0 <= f < 1.0):
            raise ValueError(f"malformed_fraction must be in [0, 1), got {self.malformed_fraction!r}")
        parse_start(self.start)  # validates
        out = Path(self.out)
        gz = out.name.endswith(".gz") if self.gzip is None else bool(self.gzip)
        return SynthConfig(
            fmt=self.fmt,
            n_events=n,
            out=out,
            users=users,
            items=items,
            seed=int(self.seed),
            start=self.start,
            days=days,
            malformed_fraction=f,
            gzip=gz,
            block_events=positive_int("block_events", self.block_events),
            max_user_events=positive_int("max_user_events", self.max_user_events),
            progress=self.progress,
        )


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def parse_start(start: str) -> int:
    try:
        dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"start must be an ISO date or datetime, got {start!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())
