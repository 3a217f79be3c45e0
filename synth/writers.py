"""Lines of text from blocks of events, and the atomic writing of a whole file."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from contract import constants as C
from synth.blocks import Block, iter_blocks
from synth.catalog import TRACKS_PER_ARTIST, Catalog, build_catalog
from synth.config import SynthConfig
from synth.corruption import MALFORMED_KINDS, with_malformed
from synth.vocab import user_keys

REDDIT_HEADER = (",".join(C.REDDIT_COLUMNS) + "\n").encode()

def lines_of(arr: pa.Array) -> memoryview:
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
        keys = pa.array(user_keys("lastfm", np.unique(users), cfg.seed), type=pa.binary())
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
    keys = pa.array(user_keys("reddit", np.unique(block.user), cfg.seed), type=pa.binary())
    user_col = pc.take(keys, pa.array(block.user - block.first_user))
    sub_col = pc.take(catalog.tails, pa.array(block.item))
    ts_col = pc.binary_join_element_wise(
        pc.cast(pa.array(block.time), pa.string()).cast(pa.binary()),
        pa.scalar(b".0\n", pa.binary()),
        pa.scalar(b"", pa.binary()),
    )
    return pc.binary_join_element_wise(user_col, sub_col, ts_col, pa.scalar(b",", pa.binary()))


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
                    lines, counts = with_malformed(cfg, b, before, lines)
                    fh.write(lines_of(lines))
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
