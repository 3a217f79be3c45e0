"""Seeded, streaming generator of raw interaction logs in the ``lastfm`` and ``reddit`` formats
(docs/design.md §2).

Usage::

    python -m jobs.synthesize --format lastfm --events 1000000 --out var/raw/lastfm.tsv.gz
    python -m jobs.synthesize --format reddit --events 200000 --out var/raw/reddit.csv --malformed-fraction 0.01

Users are generated in blocks of about ``block_events`` events; each block draws from its own random
stream (seeded by the seed and the block number), so memory stays bounded whatever the number of
events and the bytes depend only on the parameters and the seed. Malformed lines come from a separate
stream: the valid events are the same with or without them.

The model behind the data (docs/synthetic_data.md shows the calibration against the real excerpts):

- items: Zipf-Mandelbrot popularity; items grouped in clusters (scenes of artists, families of
  subreddits); each item has two successors in its cluster (album / related-artist runs);
- users: log-normal activity; a taste of a few cluster slots that drift from session to session;
  a time zone, an evening peak hour and a weekday profile; a visit interval and a lifetime that
  follows from it (light users come and go, heavy ones span the window); some churn (stop coming back
  well before the end of the window);
- sessions: log-normal lengths; each next item repeats the current one, follows a successor, or is
  drawn from the session's cluster or from global popularity (the next-item signal);
- time: intra-session gaps below the sessionization threshold (track lengths for lastfm, comment
  spacing for reddit); session starts from uniform candidates over the user's lifetime thinned by the
  hour-of-day and weekday profile (daily and weekly rhythm), a weekly activity level (bursts) and
  Pareto breaks (heavy tail), then pushed forward so that every between-session gap exceeds the
  threshold: the generator's sessions are exactly the sessions the sessionize job finds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtr, ndtri
from tqdm import tqdm

from jobs import constants as C

FORMATS = C.TEXT_LOG_FORMATS
REDDIT_HEADER = (",".join(C.REDDIT_COLUMNS) + "\n").encode()

# Kinds of malformed lines, per format: those the sessionize job must quarantine (docs/design.md §2).
MALFORMED_KINDS: dict[str, tuple[str, ...]] = {
    C.LASTFM: (
        C.WRONG_COLUMN_COUNT,
        C.UNPARSABLE_TIMESTAMP,
        C.NEGATIVE_TIMESTAMP,
        C.EMPTY_USER,
        C.EMPTY_ITEM,
        C.INVALID_UTF8,
    ),
    C.REDDIT: (
        C.WRONG_COLUMN_COUNT,
        C.UNPARSABLE_TIMESTAMP,
        C.NEGATIVE_TIMESTAMP,
        C.NON_FINITE_TIMESTAMP,
        C.TIMESTAMP_OUT_OF_RANGE,
        C.EMPTY_USER,
        C.EMPTY_ITEM,
        C.INVALID_UTF8,
    ),
}

# Independent random streams: (seed, stream, ...) seeds numpy's SeedSequence.
_STREAM_USERS = 1
_STREAM_CATALOG = 2
_STREAM_BLOCK = 3
_STREAM_MALFORMED = 4

# UTC offsets (hours) of users and their weights: mostly Americas and Europe, some Asia.
_TZ_OFFSETS = np.array([-8, -6, -5, -3, 0, 1, 2, 3, 5.5, 8, 9, 10])
_TZ_WEIGHTS = np.array([0.12, 0.08, 0.16, 0.05, 0.14, 0.17, 0.07, 0.05, 0.04, 0.04, 0.05, 0.03])
_EPOCH_THURSDAY = 3  # 1970-01-01 was a Thursday; Monday = 0
_MAX_BREAKS = 4  # breaks per user at most


@dataclass(frozen=True)
class FormatProfile:
    """Shape of one format's data; the values are calibrated in docs/synthetic_data.md."""

    threshold_s: float = field(metadata={"help": "session gap threshold of docs/design.md §3.1 (seconds)"})
    events_per_user: float = field(metadata={"help": "default number of users = events / this"})
    items_per_sqrt_event: float = field(metadata={"help": "default number of items = this * sqrt(events)"})
    max_default_items: int = field(metadata={"help": "cap of the default number of items"})
    days: float = field(metadata={"help": "default length of the time window (days)"})
    user_events_sigma: float = field(metadata={"help": "sigma of the log-normal events per user"})
    session_len_median: float = field(metadata={"help": "median of the log-normal session length"})
    session_len_sigma: float = field(metadata={"help": "sigma of the log-normal session length"})
    session_len_max: int = field(metadata={"help": "longest generated session (events)"})
    p_repeat: float = field(metadata={"help": "P(next item = current item)"})
    p_successor: float = field(metadata={"help": "P(next item = a successor of the current item)"})
    p_cluster: float = field(metadata={"help": "P(next item drawn from the session's cluster); rest: global"})
    cluster_size: float = field(metadata={"help": "mean items per cluster"})
    zipf_exponent: float = field(metadata={"help": "s of the item popularity (rank + q)^-s"})
    zipf_offset: float = field(metadata={"help": "q of the item popularity (rank + q)^-s"})
    taste_slots: int = field(metadata={"help": "clusters a user's taste holds at a time"})
    taste_alpha: float = field(metadata={"help": "Dirichlet concentration of the slot weights"})
    drift_prob: float = field(metadata={"help": "P(a taste slot moves to a new cluster) per session"})
    intra_median_s: float = field(metadata={"help": "median within-session gap (log-normal part)"})
    intra_sigma: float = field(metadata={"help": "sigma of the log-normal within-session gap"})
    intra_short_prob: float = field(metadata={"help": "P(short within-session gap: skip / quick reply)"})
    intra_short_max_s: float = field(metadata={"help": "longest short gap (uniform from 1 s)"})
    intra_pause_prob: float = field(metadata={"help": "P(pause up to 0.9 * threshold within a session)"})
    hour_peak: float = field(metadata={"help": "mean local hour of the users' activity peak"})
    hour_peak_sd: float = field(metadata={"help": "spread of the peak hour between users (hours)"})
    hour_kappa: float = field(metadata={"help": "sharpness of the hour-of-day profile (von Mises kappa)"})
    hour_floor: float = field(metadata={"help": "relative activity at the quietest hour"})
    weekend_sigma: float = field(metadata={"help": "sigma of the log-normal weekend / weekday activity ratio"})
    weekday_sigma: float = field(metadata={"help": "sigma of the log-normal activity of each day of the week"})
    interval_median_h: float = field(metadata={"help": "median over users of the mean time between sessions (hours)"})
    interval_sigma: float = field(metadata={"help": "sigma of the log-normal per-user mean time between sessions"})
    interval_min_h: float = field(metadata={"help": "shortest per-user mean time between sessions (hours)"})
    week_sigma: float = field(metadata={"help": "sigma of the log-normal weekly activity level (bursts and lulls)"})
    breaks_per_year: float = field(metadata={"help": "mean number of breaks (no activity at all) per year of a user's life"})
    break_min_h: float = field(metadata={"help": "shortest break (Pareto scale, hours)"})
    break_alpha: float = field(metadata={"help": "Pareto tail index of breaks"})
    break_max_days: float = field(metadata={"help": "longest break (days)"})
    churn_fraction: float = field(metadata={"help": "share of users who stop coming back before the end"})
    min_gap_extra_s: float = field(metadata={"help": "mean extra gap above the threshold when a session is pushed"})


PROFILES: dict[str, FormatProfile] = {
    "lastfm": FormatProfile(
        threshold_s=C.DEFAULT_GAP_SECONDS[C.LASTFM],
        events_per_user=400.0,
        items_per_sqrt_event=3.0,
        max_default_items=100_000,
        days=365.0,
        user_events_sigma=1.2,
        session_len_median=12.0,
        session_len_sigma=0.9,
        session_len_max=400,
        p_repeat=0.7,
        p_successor=0.12,
        p_cluster=0.12,
        cluster_size=15.0,
        zipf_exponent=1.0,
        zipf_offset=2.7,
        taste_slots=4,
        taste_alpha=0.8,
        drift_prob=0.01,
        intra_median_s=270.0,
        intra_sigma=0.4,
        intra_short_prob=0.08,
        intra_short_max_s=60.0,
        intra_pause_prob=0.05,
        hour_peak=20.0,
        hour_peak_sd=2.5,
        hour_kappa=1.8,
        hour_floor=0.04,
        weekend_sigma=0.4,
        weekday_sigma=0.6,
        interval_median_h=22.0,
        interval_sigma=1.0,
        interval_min_h=12.0,
        week_sigma=0.8,
        breaks_per_year=3.0,
        break_min_h=48.0,
        break_alpha=1.3,
        break_max_days=120.0,
        churn_fraction=0.15,
        min_gap_extra_s=1800.0,
    ),
    "reddit": FormatProfile(
        threshold_s=C.DEFAULT_GAP_SECONDS[C.REDDIT],
        events_per_user=60.0,
        items_per_sqrt_event=2.0,
        max_default_items=50_000,
        days=30.0,
        user_events_sigma=0.9,
        session_len_median=1.15,
        session_len_sigma=0.85,
        session_len_max=200,
        p_repeat=0.4,
        p_successor=0.15,
        p_cluster=0.3,
        cluster_size=6.0,
        zipf_exponent=1.15,
        zipf_offset=1.0,
        taste_slots=3,
        taste_alpha=0.6,
        drift_prob=0.02,
        intra_median_s=550.0,
        intra_sigma=1.0,
        intra_short_prob=0.15,
        intra_short_max_s=60.0,
        intra_pause_prob=0.0,
        hour_peak=19.0,
        hour_peak_sd=3.0,
        hour_kappa=1.2,
        hour_floor=0.06,
        weekend_sigma=0.3,
        weekday_sigma=0.4,
        interval_median_h=20.0,
        interval_sigma=0.8,
        interval_min_h=4.0,
        week_sigma=0.5,
        breaks_per_year=6.0,
        break_min_h=12.0,
        break_alpha=1.5,
        break_max_days=20.0,
        churn_fraction=0.25,
        min_gap_extra_s=900.0,
    ),
}


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
        n = _positive_int("n_events", self.n_events)
        users = self.users
        if users is None:
            users = max(min(n, 10), round(n / prof.events_per_user), math.ceil(n / self.max_user_events))
        users = _positive_int("users", users)
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
        items = _positive_int("items", items)
        days = prof.days if self.days is None else float(self.days)
        if not (math.isfinite(days) and days > 0):
            raise ValueError(f"days must be a positive number, got {self.days!r}")
        f = float(self.malformed_fraction)
        if not (0.0 <= f < 1.0):
            raise ValueError(f"malformed_fraction must be in [0, 1), got {self.malformed_fraction!r}")
        _start_epoch(self.start)  # validates
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
            block_events=_positive_int("block_events", self.block_events),
            max_user_events=_positive_int("max_user_events", self.max_user_events),
            progress=self.progress,
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _start_epoch(start: str) -> int:
    try:
        dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"start must be an ISO date or datetime, got {start!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


# --------------------------------------------------------------------------------------------------
# Names


_ADJ = ["Silent", "Electric", "Golden", "Broken", "Velvet", "Crimson", "Hollow", "Wild", "Neon", "Frozen", "Lunar", "Paper", "Iron", "Glass", "Midnight", "Burning", "Quiet", "Distant", "Strange", "Blue", "Black", "White", "Red", "Green", "Lost", "Young", "Old", "Sweet", "Bitter", "Static", "Solar", "Northern", "Southern", "Secret", "Little", "Sonic", "Cosmic", "Empty", "Hidden", "Bright", "Dark", "Fading", "Rising", "Falling", "Gentle"]
_NOUN = ["Lantern", "Wolf", "River", "Engine", "Garden", "Mirror", "Signal", "Harbor", "Machine", "Forest", "Ocean", "Tiger", "Comet", "Shadow", "Crown", "Ghost", "Echo", "Anchor", "Arrow", "Bridge", "Canyon", "Desert", "Falcon", "Island", "Jungle", "Meadow", "Needle", "Orbit", "Pilot", "Rocket", "Saint", "Temple", "Thunder", "Valley", "Voyage", "Window", "Winter", "Summer", "Island", "Planet", "Circus", "Parade", "Cinema", "Radio"]
_FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo", "Mia", "Nora", "Oscar", "Paula", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wanda", "Yuki", "Zoe", "Lars", "Ines", "Marco", "Sofia"]
_LAST = ["Adler", "Brooks", "Carter", "Dalton", "Ellis", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Klein", "Larsen", "Moreau", "Novak", "Olsen", "Petrov", "Quist", "Rossi", "Sato", "Tanaka", "Unger", "Vance", "Weber", "Young", "Zimmer", "Lindqvist", "Kowalski"]
# Non-ASCII names keep the UTF-8 path of the readers honest (the real file has e.g. 坂本龍一).
_INTL = ["坂本龍一", "久石譲", "椎名林檎", "Sigur", "Rós", "Björk", "Mötley", "Crüe", "Émilie", "Simon", "Café", "Tacvba", "Маша", "Ночь", "Кино", "Żywiołak", "Håkan", "Hellström", "Amaral", "Mão", "Morta", "Ñu", "Zoë"]
_GROUP = ["Trio", "Quartet", "Orchestra", "Collective", "Ensemble", "Project", "Society", "Club", "Band", "Experience"]
_SUB_WORDS = ["ask", "science", "music", "games", "movies", "pics", "funny", "news", "world", "tech", "art", "books", "food", "travel", "history", "space", "photo", "battles", "cats", "dogs", "memes", "code", "linux", "python", "data", "crypto", "fitness", "diy", "garden", "bikes", "cars", "retro", "jazz", "metal", "indie", "anime", "chess", "soccer", "nba", "nfl", "hockey", "politics", "finance", "jobs", "writing", "design"]


def _artist_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique artist names, except about 1 % that deliberately repeat an earlier name."""
    names: list[str] = []
    seen: set[str] = set()
    draws = rng.integers(0, 1 << 30, size=(n, 4))
    for i in range(n):
        a, b, c, d = (int(x) for x in draws[i])
        if i > 10 and d % 100 == 0:
            names.append(names[a % len(names)])  # two artists sharing a name, with different MBIDs
            continue
        for attempt in range(30):
            kind = (d + attempt) % 24
            x, y, z = (a + attempt) % 1000, b % 1000, c % 1000
            if kind < 5:
                name = f"The {_ADJ[x % len(_ADJ)]} {_NOUN[y % len(_NOUN)]}s"
            elif kind < 9:
                name = f"{_FIRST[x % len(_FIRST)]} {_LAST[y % len(_LAST)]}"
            elif kind < 13:
                name = f"{_ADJ[x % len(_ADJ)]} {_NOUN[y % len(_NOUN)]}"
            elif kind < 16:
                name = f"{_NOUN[x % len(_NOUN)]} & the {_NOUN[z % len(_NOUN)]}s"
            elif kind < 18:
                name = f"{_INTL[x % len(_INTL)]} {_NOUN[z % len(_NOUN)]}"
            elif kind < 21:
                name = f"{_ADJ[x % len(_ADJ)]} {_NOUN[y % len(_NOUN)]} {_GROUP[z % len(_GROUP)]}"
            else:
                name = f"{_FIRST[x % len(_FIRST)]} {_LAST[y % len(_LAST)]} {_GROUP[z % len(_GROUP)]}"
            if name not in seen:
                break
        else:
            name = f"{name} {i}"
        seen.add(name)
        names.append(name)
    return names


def _subreddit_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique subreddit names, also when case is ignored (as Reddit does)."""
    names: list[str] = []
    seen: set[str] = set()
    draws = rng.integers(0, 1 << 30, size=(n, 3))
    w = len(_SUB_WORDS)
    for i in range(n):
        a, b, c = (int(x) for x in draws[i])
        for attempt in range(20):
            x, y = _SUB_WORDS[(a + attempt) % w], _SUB_WORDS[(b + 3 * attempt) % w]
            if (attempt == 0 and c % 4 == 0) or x == y:
                name = x
            else:
                name = f"{x}{y}" if c % 2 else f"{x.title()}{y.title()}"
            if name.lower() not in seen:
                break
        else:
            name = f"{name}{i}"
        seen.add(name.lower())
        names.append(name)
    return names


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexes = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        for h in (hexes[i : i + 32] for i in range(0, 32 * n, 32))
    ]


def _user_keys(fmt: str, users: np.ndarray, seed: int) -> list[str]:
    """User keys from the global user index alone, so any block can name its users."""
    if fmt == "lastfm":
        return [f"user_{u + 1:06d}" for u in users]
    keys = []
    for u in users:
        h = (int(u) * 2654435761 + seed * 40503) & 0xFFFFFFFF
        a, b = _ADJ[h % len(_ADJ)], _NOUN[(h >> 8) % len(_NOUN)]
        # The digits are exactly str(u) and the words have none, so keys are unique.
        keys.append(f"{a.lower()}_{b.lower()}{u}" if (h >> 16) % 3 == 0 else f"{a}{b}{u}")
    return keys


# --------------------------------------------------------------------------------------------------
# Catalogue


@dataclass
class Catalog:
    """Items (index = popularity rank, 0 most popular), their clusters, successors and text."""

    weights: np.ndarray  # popularity weight per item
    global_cdf: np.ndarray  # cumulative share, for sampling by popularity
    cluster: np.ndarray  # cluster of each item
    cluster_items: np.ndarray  # items ordered by cluster
    cluster_cdf: np.ndarray  # c + within-cluster cumulative share, in cluster_items order
    cluster_bounds: np.ndarray  # segment c of cluster_items is [bounds[c], bounds[c+1])
    cluster_weight_cdf: np.ndarray  # for drawing a cluster by popularity
    successors: np.ndarray  # (items, 2): next and next-but-one item in the cluster's cyclic order
    track_cdf: np.ndarray  # lastfm: popularity of an artist's tracks
    tails: pa.Array  # binary text of the line after the timestamp, per item (reddit) or item*track (lastfm)
    keys: list[str]  # item key as the sessionize job sees it (artist MBID or name, subreddit)

    @property
    def n_items(self) -> int:
        return len(self.weights)

    def sample_global(self, u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.global_cdf, u, side="right"), self.n_items - 1)

    def sample_in_cluster(self, clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cluster_cdf, clusters + u, side="right")
        pos = np.clip(pos, self.cluster_bounds[clusters], self.cluster_bounds[clusters + 1] - 1)
        return self.cluster_items[pos]


TRACKS_PER_ARTIST = 8


def build_catalog(fmt: str, n_items: int, seed: int) -> Catalog:
    """The item catalogue of a generated file (deterministic for the format, size and seed)."""
    prof = PROFILES[fmt]
    rng = np.random.default_rng([seed, _STREAM_CATALOG, n_items])
    ranks = np.arange(n_items, dtype=np.float64)
    weights = (ranks + prof.zipf_offset) ** -prof.zipf_exponent
    global_cdf = np.cumsum(weights) / weights.sum()
    global_cdf[-1] = 1.0

    n_clusters = max(1, round(n_items / prof.cluster_size))
    perm = rng.permutation(n_items)
    cluster = np.empty(n_items, dtype=np.int64)
    cluster[perm] = np.arange(n_items) % n_clusters  # random membership, no empty cluster
    order = perm[np.argsort(cluster[perm], kind="stable")]  # by cluster, random order inside
    counts = np.bincount(cluster, minlength=n_clusters)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    w_sorted = weights[order]
    seg_total = np.add.reduceat(w_sorted, bounds[:-1])
    seg_cum = np.cumsum(w_sorted) - np.repeat(np.cumsum(seg_total) - seg_total, counts)
    within = seg_cum / np.repeat(seg_total, counts)
    within[bounds[1:] - 1] = 1.0
    cluster_cdf = np.repeat(np.arange(n_clusters), counts) + within
    cluster_weight_cdf = np.cumsum(seg_total) / seg_total.sum()
    cluster_weight_cdf[-1] = 1.0

    pos_in_seg = np.arange(n_items) - np.repeat(bounds[:-1], counts)
    seg_len = np.repeat(counts, counts)
    seg_start = np.repeat(bounds[:-1], counts)
    successors = np.empty((n_items, 2), dtype=np.int64)
    for k in (1, 2):
        successors[order, k - 1] = order[seg_start + (pos_in_seg + k) % seg_len]

    track_w = 1.0 / np.arange(1, TRACKS_PER_ARTIST + 1)
    track_cdf = np.cumsum(track_w) / track_w.sum()
    track_cdf[-1] = 1.0

    if fmt == "lastfm":
        names = _artist_names(rng, n_items)
        mbids = _uuids(rng, n_items)
        no_mbid = rng.random(n_items) < 0.08  # real file: ~7.6 % of rows lack the artist MBID
        track_mbids = _uuids(rng, n_items * TRACKS_PER_ARTIST)
        no_track_mbid = rng.random(n_items * TRACKS_PER_ARTIST) < 0.22
        track_words = rng.integers(0, 1 << 30, size=(n_items * TRACKS_PER_ARTIST, 3))
        tails = []
        for i in range(n_items):
            amb = "" if no_mbid[i] else mbids[i]
            for t in range(TRACKS_PER_ARTIST):
                j = i * TRACKS_PER_ARTIST + t
                a, b, c = (int(x) for x in track_words[j])
                title = f"{_ADJ[a % len(_ADJ)]} {_NOUN[b % len(_NOUN)]}"
                if c % 5 == 0:
                    title += f" (Live {2000 + c % 10})"
                elif c % 7 == 0:
                    title = f"The {title}"
                tmb = "" if (no_mbid[i] or no_track_mbid[j]) else track_mbids[j]
                tails.append(f"{amb}\t{names[i]}\t{tmb}\t{title}\n".encode())
        keys = [names[i] if no_mbid[i] else mbids[i] for i in range(n_items)]
    else:
        names = _subreddit_names(rng, n_items)
        tails = [n.encode() for n in names]
        keys = names
    return Catalog(
        weights=weights,
        global_cdf=global_cdf,
        cluster=cluster,
        cluster_items=order,
        cluster_cdf=cluster_cdf,
        cluster_bounds=bounds,
        cluster_weight_cdf=cluster_weight_cdf,
        successors=successors,
        track_cdf=track_cdf,
        tails=pa.array(tails, type=pa.binary()),
        keys=keys,
    )


# --------------------------------------------------------------------------------------------------
# Users and blocks


def events_per_user(n_events: int, users: int, sigma: float, cap: int, seed: int) -> np.ndarray:
    """Log-normal activity per user, at least 1 and at most ``cap`` each, summing to ``n_events`` exactly."""
    rng = np.random.default_rng([seed, _STREAM_USERS])
    w = rng.lognormal(0.0, sigma, users)
    n = np.ones(users, dtype=np.int64)
    remaining = n_events - users
    free = np.ones(users, dtype=bool)
    while remaining > 0:
        share = w * free
        quota = remaining * share / share.sum()
        add = np.floor(quota).astype(np.int64)
        short = remaining - int(add.sum())
        if short:  # largest fractional parts first; stable order keeps it deterministic
            frac_order = np.argsort(-(quota - add), kind="stable")[:short]
            add[frac_order] += 1
        n += add
        over = n > cap
        remaining = int((n[over] - cap).sum())
        n[over] = cap
        free &= ~over
        free &= n < cap
    return n


def _segment_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at every segment (segments given by their lengths)."""
    cs = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
    return cs - np.repeat(before, counts)


def _rank_in_group(group: np.ndarray) -> np.ndarray:
    """0-based index of each element within its run of equal (sorted) group values."""
    counts = np.bincount(group)
    nz = counts[counts > 0]
    return np.arange(len(group)) - np.repeat(np.cumsum(nz) - nz, nz)


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, cap: float, size: int) -> np.ndarray:
    """Log-normal draws conditioned on being below ``cap`` (inverse CDF, so no rejection loop)."""
    top = ndtr((math.log(cap) - math.log(median)) / sigma)
    u = rng.random(size) * top
    return np.exp(math.log(median) + sigma * ndtri(np.maximum(u, 1e-300)))


@dataclass
class Block:
    """Events of consecutive users, grouped by user and in time order within a user."""

    first_user: int
    user: np.ndarray  # global user index per event
    time: np.ndarray  # seconds since the epoch (int64)
    item: np.ndarray  # item index
    track: np.ndarray  # track index within the artist (lastfm)
    session: np.ndarray  # 0-based session number within the block (the generator's own sessions)
    churned: np.ndarray  # per user of the block: chosen to stop early


def _hour_profile(prof: FormatProfile, local_hour: np.ndarray, peak: np.ndarray) -> np.ndarray:
    bump = np.exp(prof.hour_kappa * (np.cos(2 * np.pi * (local_hour - peak) / 24.0) - 1.0))
    return prof.hour_floor + (1.0 - prof.hour_floor) * bump


def _session_lengths(
    rng: np.random.Generator, prof: FormatProfile, n_u: np.ndarray, span: float
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, length) of every session, grouped by user: log-normal lengths, the last one cut so
    that each user has exactly ``n_u`` events.

    A user too heavy for the window at the usual length (each session costs threshold + extra gap
    + its duration) gets longer sessions, enough to fit in 60 % of it: heavy users binge."""
    spread = math.exp(prof.session_len_sigma**2 / 2)
    gap = prof.intra_median_s * math.exp(prof.intra_sigma**2 / 2)
    room = 0.6 * span - n_u * gap
    stretch = n_u * (prof.threshold_s + prof.min_gap_extra_s) / (prof.session_len_median * spread * np.maximum(room, 1.0))
    stretch = np.clip(np.where(room > 0, stretch, np.inf), 1.0, prof.session_len_max / prof.session_len_median)
    log_median = np.log(prof.session_len_median * stretch)
    mean_len = prof.session_len_median * stretch * spread
    need = n_u.astype(np.int64).copy()
    parts_owner, parts_len = [], []
    while (active := np.flatnonzero(need > 0)).size:
        k = np.ceil(need[active] / mean_len[active] * 1.2).astype(np.int64) + 2
        owner = np.repeat(active, k)
        z = rng.standard_normal(len(owner))
        lens = np.rint(np.exp(log_median[owner] + prof.session_len_sigma * z))
        lens = np.clip(lens, 1, prof.session_len_max).astype(np.int64)
        before = _segment_cumsum(lens, k) - lens
        cap = need[owner]
        keep = before < cap
        lens = np.where(keep, np.minimum(lens, cap - before), 0)
        parts_owner.append(owner[keep])
        parts_len.append(lens[keep])
        need -= np.bincount(owner, weights=lens, minlength=len(n_u)).astype(np.int64)
    s_owner = np.concatenate(parts_owner)
    order = np.argsort(s_owner, kind="stable")  # later rounds hold later sessions
    return s_owner[order], np.concatenate(parts_len)[order]


def _session_focus(
    rng: np.random.Generator, prof: FormatProfile, catalog: Catalog, slot_w: np.ndarray, s_owner: np.ndarray
) -> np.ndarray:
    """The cluster of every session: one of the user's taste slots, whose clusters drift."""
    n_sessions = len(s_owner)
    slot = (rng.random(n_sessions)[:, None] > np.cumsum(slot_w, axis=1)[s_owner]).sum(axis=1)
    slot = np.minimum(slot, prof.taste_slots - 1)
    slot_draw = np.minimum(
        np.searchsorted(catalog.cluster_weight_cdf, rng.random((n_sessions, prof.taste_slots)), side="right"),
        len(catalog.cluster_weight_cdf) - 1,
    )
    change = rng.random((n_sessions, prof.taste_slots)) < prof.drift_prob
    change[_rank_in_group(s_owner) == 0] = True  # every slot starts with a draw
    last_change = np.maximum.accumulate(np.where(change, np.arange(n_sessions)[:, None], 0), axis=0)
    return slot_draw[last_change[np.arange(n_sessions), slot], slot]


def _item_chain(
    rng: np.random.Generator, prof: FormatProfile, catalog: Catalog, focus: np.ndarray, ev_session: np.ndarray,
    ev_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(item, track) of every event: a chain within each session, one vectorised step per position."""
    n_ev = len(ev_pos)
    u = rng.random((n_ev, 3))
    items = np.empty(n_ev, dtype=np.int64)
    by_pos = np.argsort(ev_pos, kind="stable")
    pos_counts = np.bincount(ev_pos)
    first = by_pos[: pos_counts[0]]
    items[first] = catalog.sample_in_cluster(focus[ev_session[first]], u[first, 1])
    t_rep = prof.p_repeat
    t_succ = t_rep + prof.p_successor
    t_clu = t_succ + prof.p_cluster
    lo = int(pos_counts[0])
    for cnt in pos_counts[1:]:
        idx = by_pos[lo : lo + cnt]
        lo += int(cnt)
        prev = items[idx - 1]
        a, pick = u[idx, 0], u[idx, 1]
        nxt = prev.copy()  # a repeat unless one of the branches below
        m = (a >= t_rep) & (a < t_succ)
        nxt[m] = catalog.successors[prev[m], (pick[m] >= 0.7).astype(np.int64)]
        m = (a >= t_succ) & (a < t_clu)
        nxt[m] = catalog.sample_in_cluster(focus[ev_session[idx[m]]], pick[m])
        m = a >= t_clu
        nxt[m] = catalog.sample_global(pick[m])
        items[idx] = nxt
    tracks = np.minimum(np.searchsorted(catalog.track_cdf, u[:, 2], side="right"), TRACKS_PER_ARTIST - 1)
    return items, tracks


def _intra_gaps(rng: np.random.Generator, prof: FormatProfile, ev_pos: np.ndarray) -> np.ndarray:
    """Whole seconds from the previous event of the session (0 for the first), below 0.9 * threshold."""
    n_ev = len(ev_pos)
    cap = 0.9 * prof.threshold_s
    gaps = _truncated_lognormal(rng, prof.intra_median_s, prof.intra_sigma, cap, n_ev)
    kind = rng.random(n_ev)
    short = kind < prof.intra_short_prob
    gaps[short] = rng.uniform(1.0, prof.intra_short_max_s, int(short.sum()))
    pause = kind > 1.0 - prof.intra_pause_prob
    gaps[pause] = rng.uniform(0.3 * cap, cap, int(pause.sum()))
    gaps = np.maximum(np.rint(gaps), 1).astype(np.int64)
    gaps[ev_pos == 0] = 0
    return gaps


def _push_apart(
    start: np.ndarray, duration: np.ndarray, min_gap: np.ndarray, s_owner: np.ndarray, s_per_user: np.ndarray
) -> np.ndarray:
    """Starts moved forward where needed so that each session begins ``min_gap`` after the previous
    one ends: s'_k = max(s_k, s'_{k-1} + dur_{k-1} + mg_k) = c_k + cummax_{j<=k}(s_j - c_j) within a user,
    with c_k the running sum of dur_{j-1} + mg_j. One cumulative max over the block: each user is lifted
    by 2^42 s above the previous one so that no maximum leaks across users."""
    first = _rank_in_group(s_owner) == 0
    step = np.where(first, 0, np.roll(duration, 1) + min_gap)
    c = _segment_cumsum(step, s_per_user)
    lift = (s_owner.astype(np.int64) << 42) + (np.int64(1) << 41)
    return np.maximum.accumulate(start - c + lift) - lift + c


def generate_block(
    cfg: SynthConfig, catalog: Catalog, block_index: int, first_user: int, n_u: np.ndarray
) -> Block:
    """Generate the events of users ``first_user .. first_user + len(n_u) - 1`` from the block's stream."""
    prof = PROFILES[cfg.fmt]
    rng = np.random.default_rng([cfg.seed, _STREAM_BLOCK, block_index])
    n_users = len(n_u)
    span = float(cfg.days) * 86400.0
    start_epoch = _start_epoch(cfg.start)

    # --- users: time zone, rhythm, taste weights
    tz = rng.choice(_TZ_OFFSETS, size=n_users, p=_TZ_WEIGHTS / _TZ_WEIGHTS.sum())
    peak = (prof.hour_peak + rng.normal(0.0, prof.hour_peak_sd, n_users)) % 24.0
    # weekday profile: a weekend / weekday ratio and a preference for each day, at most 1
    day_w = rng.lognormal(0.0, prof.weekday_sigma, (n_users, 7))
    day_w[:, 5:] *= rng.lognormal(0.0, prof.weekend_sigma, n_users)[:, None]
    day_w /= day_w.max(axis=1, keepdims=True)
    slot_w = rng.dirichlet(np.full(prof.taste_slots, prof.taste_alpha), size=n_users)

    # --- sessions, their clusters, their items and their inner times
    s_owner, s_len = _session_lengths(rng, prof, n_u, span)
    n_sessions = len(s_len)
    s_per_user = np.bincount(s_owner, minlength=n_users)
    focus = _session_focus(rng, prof, catalog, slot_w, s_owner)
    ev_session = np.repeat(np.arange(n_sessions), s_len)
    ev_pos = np.arange(len(ev_session)) - np.repeat(np.cumsum(s_len) - s_len, s_len)
    items, tracks = _item_chain(rng, prof, catalog, focus, ev_session, ev_pos)
    offset = _segment_cumsum(_intra_gaps(rng, prof, ev_pos), s_len)
    duration = offset[np.cumsum(s_len) - 1]

    # --- lifetime: a per-user visit interval; heavy users span the window, churners stop early
    tau = rng.lognormal(math.log(prof.interval_median_h * 3600.0), prof.interval_sigma, n_users)
    tau = np.maximum(tau, prof.interval_min_h * 3600.0)
    life = np.minimum(np.maximum(s_per_user - 1, 1) * tau, span)
    churn_pick = rng.random(n_users) < prof.churn_fraction
    leave_churn = life + rng.random(n_users) * np.maximum(0.9 * span - life, 0.0)
    leave = np.where(churn_pick & (life < 0.9 * span), leave_churn, span)
    join = leave - life
    churned = leave < span

    # Activity varies week to week (bursts and lulls) and stops entirely during breaks.
    n_weeks = int(math.ceil(span / 604800.0)) + 1
    week_level = rng.lognormal(0.0, prof.week_sigma, (n_users, n_weeks))
    week_level /= week_level.max(axis=1, keepdims=True)
    n_breaks = np.minimum(rng.poisson(prof.breaks_per_year * life / (365.0 * 86400.0)), _MAX_BREAKS)
    xm = prof.break_min_h * 3600.0
    break_len = np.minimum(
        xm * rng.random((n_users, _MAX_BREAKS)) ** (-1.0 / prof.break_alpha),
        np.minimum(prof.break_max_days * 86400.0, life / (2 * _MAX_BREAKS))[:, None],
    )
    break_len[np.arange(_MAX_BREAKS)[None, :] >= n_breaks[:, None]] = 0.0
    break_start = join[:, None] + rng.random((n_users, _MAX_BREAKS)) * life[:, None]

    # --- session starts: uniform candidates over the lifetime thinned by the user's profile
    # (hour of day, weekday, week level, breaks), then a random subset of s_u of the accepted.
    grid = np.linspace(0.0, 24.0, 96, endpoint=False)
    hour_mean = _hour_profile(prof, grid[None, :], peak[:, None]).mean(axis=1)
    # expected acceptance; breaks cover at most half the lifetime, hence the 0.5 (sizes the draws only)
    accept_mean = hour_mean * day_w.mean(axis=1) * week_level.mean(axis=1) * 0.5
    got = np.zeros(n_users, dtype=np.int64)
    parts_owner, parts_time, parts_key = [], [], []
    while (active := np.flatnonzero(got < s_per_user)).size:
        k = np.ceil((s_per_user - got)[active] / accept_mean[active] * 1.2).astype(np.int64) + 8
        owner = np.repeat(active, k)
        t = join[owner] + rng.random(len(owner)) * life[owner]
        local = (start_epoch + t) / 3600.0 + tz[owner]
        dow = (np.floor(local / 24.0).astype(np.int64) + _EPOCH_THURSDAY) % 7
        p_acc = _hour_profile(prof, local % 24.0, peak[owner])
        p_acc *= day_w[owner, dow]
        p_acc *= week_level[owner, np.minimum((t // 604800.0).astype(np.int64), n_weeks - 1)]
        in_break = (t[:, None] >= break_start[owner]) & (t[:, None] < break_start[owner] + break_len[owner])
        p_acc[in_break.any(axis=1)] = 0.0
        acc = rng.random(len(owner)) < p_acc
        parts_owner.append(owner[acc])
        parts_time.append(t[acc])
        parts_key.append(rng.random(int(acc.sum())))
        got += np.bincount(owner[acc], minlength=n_users)
    c_owner = np.concatenate(parts_owner)
    c_time = np.concatenate(parts_time)
    pick = np.lexsort((np.concatenate(parts_key), c_owner))  # random order within each user
    pick = pick[_rank_in_group(c_owner[pick]) < s_per_user[c_owner[pick]]]
    chosen = np.lexsort((c_time[pick], c_owner[pick]))
    start = np.rint(c_time[pick][chosen]).astype(np.int64)

    min_gap = int(prof.threshold_s) + 1 + np.rint(rng.exponential(prof.min_gap_extra_s, n_sessions)).astype(np.int64)
    start = _push_apart(start, duration, min_gap, s_owner, s_per_user)

    return Block(
        first_user=first_user,
        user=first_user + np.repeat(s_owner, s_len),
        time=start_epoch + np.repeat(start, s_len) + offset,
        item=items,
        track=tracks,
        session=ev_session,
        churned=churned,
    )


def iter_blocks(cfg: SynthConfig, catalog: Catalog | None = None) -> Iterator[tuple[int, int, Block]]:
    """Yield ``(block_index, events_before, Block)`` for a resolved config, in user order."""
    cfg = cfg.resolved()
    prof = PROFILES[cfg.fmt]
    catalog = catalog or build_catalog(cfg.fmt, cfg.items, cfg.seed)
    n_u = events_per_user(cfg.n_events, cfg.users, prof.user_events_sigma, cfg.max_user_events, cfg.seed)
    bounds = block_bounds(n_u, cfg.block_events)
    done = 0
    for b in range(len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        yield b, done, generate_block(cfg, catalog, b, lo, n_u[lo:hi])
        done += int(n_u[lo:hi].sum())


def block_bounds(n_u: np.ndarray, block_events: int) -> np.ndarray:
    """Split consecutive users into blocks of at most ``block_events`` events (one heavy user alone)."""
    cum = np.cumsum(n_u)
    bounds = [0]
    base = 0
    while bounds[-1] < len(n_u):
        # last user whose cumulative count stays within the block (at least one user)
        j = int(np.searchsorted(cum, base + block_events, side="right"))
        j = max(j, bounds[-1] + 1)
        bounds.append(j)
        base = int(cum[j - 1])
    return np.asarray(bounds)


# --------------------------------------------------------------------------------------------------
# Formatting


def _lines_of(arr: pa.Array) -> memoryview:
    """The concatenated bytes of a binary array (each value already ends with a newline)."""
    arr = arr.cast(pa.binary()) if arr.type != pa.binary() else arr
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(data_buf)[offsets[0] : offsets[-1]]


def format_block(cfg: SynthConfig, catalog: Catalog, block: Block) -> pa.Array:
    """One binary value per valid line, in file order (lastfm: newest first within a user)."""
    n = len(block.user)
    if cfg.fmt == "lastfm":
        # events are time-ascending within a user: reverse each user's run
        counts = np.bincount(block.user - block.first_user)
        counts = counts[counts > 0]
        ends = np.cumsum(counts)
        starts = ends - counts
        idx = np.repeat(starts + ends - 1, counts) - np.arange(n)
        users, times = block.user[idx], block.time[idx]
        tail_idx = block.item[idx] * TRACKS_PER_ARTIST + block.track[idx]
        keys = pa.array(_user_keys("lastfm", np.unique(users), cfg.seed), type=pa.binary())
        user_col = pc.take(keys, pa.array(users - block.first_user))
        # the cast gives "YYYY-MM-DD HH:MM:SS" and is ~25x faster than strftime
        ts = pc.cast(pa.array(times).cast(pa.timestamp("s")), pa.string())
        ts_col = pc.binary_join_element_wise(
            pc.replace_substring(ts, pattern=" ", replacement="T", max_replacements=1),
            pa.scalar("Z"),
            pa.scalar(""),
        ).cast(pa.binary())
        tail_col = pc.take(catalog.tails, pa.array(tail_idx))
        return pc.binary_join_element_wise(user_col, ts_col, tail_col, pa.scalar(b"\t", pa.binary()))
    keys = pa.array(_user_keys("reddit", np.unique(block.user), cfg.seed), type=pa.binary())
    user_col = pc.take(keys, pa.array(block.user - block.first_user))
    sub_col = pc.take(catalog.tails, pa.array(block.item))
    ts_col = pc.binary_join_element_wise(
        pc.cast(pa.array(block.time), pa.string()).cast(pa.binary()),
        pa.scalar(b".0\n", pa.binary()),
        pa.scalar(b"", pa.binary()),
    )
    return pc.binary_join_element_wise(user_col, sub_col, ts_col, pa.scalar(b",", pa.binary()))


def malformed_count(fraction: float, events_before: int) -> int:
    """Malformed lines due after ``events_before`` valid events: the share of all lines is ``fraction``."""
    return int(math.floor(events_before * fraction / (1.0 - fraction) + 0.5)) if fraction > 0 else 0


def _corrupt(fmt: str, kind: str, good: bytes, rng: np.random.Generator) -> bytes:
    sep = b"\t" if fmt == "lastfm" else b","
    cols = good.rstrip(b"\n").split(sep)
    r = int(rng.integers(0, 1 << 30))
    if kind == C.WRONG_COLUMN_COUNT:
        cols = cols[:-1] if r % 2 else [*cols, cols[-1]]
    elif kind == C.UNPARSABLE_TIMESTAMP:
        # none of these is valid ISO-8601 / a number, and none holds the delimiter or a quote, so a
        # reader that splits on the literal delimiter sees the right column count
        bad_ts = (
            (b"2024-13-45T25:61:00Z", b"not-a-date", b"", b"05/04/2009 23:08", b"1241478537")
            if fmt == "lastfm"
            else (b"abc", b"", b"2016-12-26 10:00:00", b"1.48e9x", b"12.5.2016")
        )
        cols[1 if fmt == "lastfm" else 2] = bad_ts[r % len(bad_ts)]
    elif kind == C.NEGATIVE_TIMESTAMP:
        if fmt == "lastfm":  # before 1970: impossible for a scrobble
            cols[1] = (b"1969-07-20T20:17:40Z", b"1900-01-01T00:00:00Z")[r % 2]
        else:
            cols[2] = b"-" + cols[2]
    elif kind == C.TIMESTAMP_OUT_OF_RANGE:
        cols[2] = (b"253402300800.0", b"1e300", b"99999999999999")[r % 3]
    elif kind == C.NON_FINITE_TIMESTAMP:
        cols[2] = (b"nan", b"inf", b"-inf", b"NaN")[r % 4]
    elif kind == C.EMPTY_USER:
        cols[0] = b""
    elif kind == C.EMPTY_ITEM:
        if fmt == "lastfm":
            cols[2] = b""
            cols[3] = b""
        else:
            cols[1] = b""
    elif kind == C.INVALID_UTF8:
        junk = (b"\xff\xfe", b"\xc3\x28", b"\xe6\x97", b"\x80")[r % 4]
        target = 3 if fmt == "lastfm" else r % 2
        cols[target] = cols[target][: max(1, len(cols[target]) // 2)] + junk + cols[target][len(cols[target]) // 2 :]
    else:  # pragma: no cover - kinds are fixed above
        raise ValueError(kind)
    return sep.join(cols) + b"\n"


def _with_malformed(
    cfg: SynthConfig, block_index: int, events_before: int, lines: pa.Array
) -> tuple[pa.Array, dict[str, int]]:
    n_good = len(lines)
    first_bad = malformed_count(cfg.malformed_fraction, events_before)
    n_bad = malformed_count(cfg.malformed_fraction, events_before + n_good) - first_bad
    kinds = MALFORMED_KINDS[cfg.fmt]
    counts = dict.fromkeys(kinds, 0)
    if n_bad <= 0:
        return lines, counts
    rng = np.random.default_rng([cfg.seed, _STREAM_MALFORMED, block_index])
    base = rng.integers(0, n_good, n_bad)
    bad = []
    for j in range(n_bad):
        kind = kinds[(first_bad + j) % len(kinds)]  # every kind in turn
        counts[kind] += 1
        bad.append(_corrupt(cfg.fmt, kind, lines[int(base[j])].as_py(), rng))
    total = n_good + n_bad
    is_bad = np.zeros(total, dtype=bool)
    is_bad[rng.choice(total, n_bad, replace=False)] = True
    order = np.empty(total, dtype=np.int64)
    order[~is_bad] = np.arange(n_good)
    order[is_bad] = n_good + np.arange(n_bad)
    merged = pa.concat_arrays([lines.cast(pa.binary()), pa.array(bad, type=pa.binary())])
    return pc.take(merged, pa.array(order)), counts


# --------------------------------------------------------------------------------------------------
# Writing


def _open_output(tmp: Path, gz: bool) -> tuple[BinaryIO, BinaryIO]:
    raw = open(tmp, "wb")  # noqa: SIM115 - closed by the caller
    if not gz:
        return raw, raw
    # mtime=0 and no file name in the header: the same data give the same bytes
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0), raw


def generate(
    fmt: str,
    n_events: int,
    out: str | Path,
    *,
    seed: int = 0,
    users: int | None = None,
    items: int | None = None,
    start: str = "2024-01-01",
    days: float | None = None,
    malformed_fraction: float = 0.0,
    gzip: bool | None = None,
    block_events: int = 1 << 16,
    max_user_events: int = 200_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a synthetic raw log to ``out`` atomically and return a summary of what was written.

    The summary has: format, path, events, malformed_lines, malformed_by_kind, lines (data lines, header
    excluded), users, churned_users, items (catalogue size), items_used, first_event, last_event (ISO
    UTC), span_days, bytes, seed, gzip.
    """
    cfg = SynthConfig(
        fmt=fmt,
        n_events=n_events,
        out=Path(out),
        users=users,
        items=items,
        seed=seed,
        start=start,
        days=days,
        malformed_fraction=malformed_fraction,
        gzip=gzip,
        block_events=block_events,
        max_user_events=max_user_events,
        progress=progress,
    ).resolved()
    return write(cfg)


def write(cfg: SynthConfig) -> dict[str, Any]:
    """Generate and write the file described by ``cfg`` (staging file, then rename)."""
    cfg = cfg.resolved()
    out = cfg.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    catalog = build_catalog(cfg.fmt, cfg.items, cfg.seed)
    kinds = dict.fromkeys(MALFORMED_KINDS[cfg.fmt], 0)
    used = np.zeros(cfg.items, dtype=bool)
    first_t, last_t, churned, lines_written = None, None, 0, 0
    try:
        fh, raw = _open_output(tmp, bool(cfg.gzip))
        try:
            if cfg.fmt == "reddit":
                fh.write(REDDIT_HEADER)
            with tqdm(total=cfg.n_events, unit="ev", unit_scale=True, disable=not cfg.progress, desc=out.name) as bar:
                for b, before, block in iter_blocks(cfg, catalog):
                    lines = format_block(cfg, catalog, block)
                    lines, counts = _with_malformed(cfg, b, before, lines)
                    fh.write(_lines_of(lines))
                    lines_written += len(lines)
                    for k, v in counts.items():
                        kinds[k] += v
                    used[block.item] = True
                    churned += int(block.churned.sum())
                    lo, hi = int(block.time.min()), int(block.time.max())
                    first_t = lo if first_t is None else min(first_t, lo)
                    last_t = hi if last_t is None else max(last_t, hi)
                    bar.update(len(block.user))
        finally:
            fh.close()
            if raw is not fh:
                raw.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "format": cfg.fmt,
        "path": str(out),
        "events": cfg.n_events,
        "malformed_lines": sum(kinds.values()),
        "malformed_by_kind": kinds,
        "lines": lines_written,
        "users": cfg.users,
        "churned_users": churned,
        "items": cfg.items,
        "items_used": int(used.sum()),
        "first_event": iso(first_t),
        "last_event": iso(last_t),
        "span_days": round((last_t - first_t) / 86400.0, 3),
        "bytes": out.stat().st_size,
        "seed": cfg.seed,
        "gzip": bool(cfg.gzip),
    }


# --------------------------------------------------------------------------------------------------
# CLI


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (None means: derived from --events, or required)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.required:
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    helps = {f.name: f.metadata.get("help", "") for f in fields(SynthConfig)}
    p = argparse.ArgumentParser(
        prog="python -m jobs.synthesize",
        description="Write a seeded synthetic raw interaction log (lastfm TSV or reddit CSV), streaming.",
        epilog="Prints a JSON summary (events, malformed lines by kind, users, items, time span). "
        "See docs/synthetic_data.md.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, required=True, help=helps["fmt"])
    p.add_argument("--events", dest="n_events", metavar="N", type=int, required=True, help=helps["n_events"])
    p.add_argument("--out", metavar="PATH", type=Path, required=True, help=helps["out"] + " (written atomically)")
    p.add_argument("--users", metavar="U", type=int, default=None, help=helps["users"])
    p.add_argument("--items", metavar="I", type=int, default=None, help=helps["items"])
    p.add_argument("--seed", metavar="S", type=int, default=0, help=helps["seed"])
    p.add_argument("--start", metavar="DATE", default="2024-01-01", help=helps["start"])
    p.add_argument("--days", metavar="D", type=float, default=None, help=helps["days"])
    p.add_argument("--malformed-fraction", metavar="F", type=float, default=0.0, help=helps["malformed_fraction"])
    p.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=None, help=helps["gzip"])
    p.add_argument("--block-events", metavar="E", type=int, default=1 << 16, help=helps["block_events"])
    p.add_argument("--max-user-events", metavar="E", type=int, default=200_000, help=helps["max_user_events"])
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help=helps["progress"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = SynthConfig(**vars(args))
    try:
        cfg = cfg.resolved()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write(cfg)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
