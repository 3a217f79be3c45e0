"""Malformed lines: one of every kind the sessionize job quarantines (docs/design.md §2), mixed into the
valid lines from their own random stream."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract import constants as C
from synth.config import STREAM_MALFORMED, SynthConfig

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


def malformed_count(fraction: float, events_before: int) -> int:
    """Malformed lines due after ``events_before`` valid events: the share of all lines is ``fraction``."""
    return int(math.floor(events_before * fraction / (1.0 - fraction) + 0.5)) if fraction > 0 else 0


def corrupt(fmt: str, kind: str, good: bytes, rng: np.random.Generator) -> bytes:
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


def with_malformed(
    cfg: SynthConfig, block_index: int, events_before: int, lines: pa.Array
) -> tuple[pa.Array, dict[str, int]]:
    n_good = len(lines)
    first_bad = malformed_count(cfg.malformed_fraction, events_before)
    n_bad = malformed_count(cfg.malformed_fraction, events_before + n_good) - first_bad
    kinds = MALFORMED_KINDS[cfg.fmt]
    counts = dict.fromkeys(kinds, 0)
    if n_bad <= 0:
        return lines, counts
    rng = np.random.default_rng([cfg.seed, STREAM_MALFORMED, block_index])
    base = rng.integers(0, n_good, n_bad)
    bad = []
    for j in range(n_bad):
        kind = kinds[(first_bad + j) % len(kinds)]  # every kind in turn
        counts[kind] += 1
        bad.append(corrupt(cfg.fmt, kind, lines[int(base[j])].as_py(), rng))
    total = n_good + n_bad
    is_bad = np.zeros(total, dtype=bool)
    is_bad[rng.choice(total, n_bad, replace=False)] = True
    order = np.empty(total, dtype=np.int64)
    order[~is_bad] = np.arange(n_good)
    order[is_bad] = n_good + np.arange(n_bad)
    merged = pa.concat_arrays([lines.cast(pa.binary()), pa.array(bad, type=pa.binary())])
    return pc.take(merged, pa.array(order)), counts
