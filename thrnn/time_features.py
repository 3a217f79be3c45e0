"""Covariates of the return-time head: what is known about a user when a session ends.

Row ``p`` of :func:`covariates_after` describes the moment user u's session ``p`` ended, from
sessions ``<= p`` only; the gap *before* session r is predicted from row ``r - 1``
(:func:`target_covariates`), and nightly scoring reads the row of each user's last session.

Columns (:data:`COLUMNS`; gaps as ``ln`` hours, standardised with the training gaps' mean ``m0``
and spread ``s0`` so the network sees numbers near 0):

- the phase of the end time: sine and cosine of the hour of the week and of the day (period 24 h
  and 12 h). Times are UTC; a constant offset (local time) only shifts the phase, which the network
  absorbs;
- the session's length (``ln`` events) and duration (``ln(1 + hours)``), and whether it is a
  continuation chunk;
- the user's gaps so far: the mean of ``ln`` gap shrunk toward ``m0`` with :data:`PRIOR_GAPS`
  pseudo-gaps (what the shrunk log-normal baseline predicts), its shrunk spread, the last gap and
  the mean of the last three (0 and a flag when there are none), and ``ln(1 + sessions so far)``;
- the share of the user's session *starts* in each hour of the day, rotated so that column 0 is
  the hour the session ended: how soon the user's usual hours come round again.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from thrnn.data import SessionData

PRIOR_GAPS = 5.0
HOURS_OF_DAY = 24
_PHASES = ("week_sin", "week_cos", "day_sin", "day_cos", "half_day_sin", "half_day_cos")
_USER = ("log_length", "log_duration", "continuation", "gap_mean", "gap_log_spread", "last_gap", "no_gap",
         "last3_gap", "log_sessions")
COLUMNS: tuple[str, ...] = (*_PHASES, *_USER, *(f"start_share_{h:02d}" for h in range(HOURS_OF_DAY)))
N_COVARIATES = len(COLUMNS)
_SHARE_SCALE = 4.0  # shares sum to 1 over 24 columns: scaled so a typical column is not ~0.04
_LOG_GAP_FLOOR = 1e-3  # hours (3.6 s): gaps are >= the session gap, but guard ln 0


def log_gaps(data: SessionData, upper_hours: float) -> np.ndarray:
    """``ln`` of each session's gap in hours, clipped to [1e-3, upper] (NaN where there is no real gap)."""
    g = data.gap_hours.numpy()
    out = np.log(np.clip(np.nan_to_num(g, nan=1.0), _LOG_GAP_FLOOR, upper_hours))
    return np.where(data.time_mask.numpy(), out, np.nan)


def gap_scale(data: SessionData, rows: torch.Tensor, upper_hours: float) -> tuple[float, float]:
    """(mean, standard deviation) of ``ln`` gap over the real gaps of ``rows`` (0, 1 when there are none)."""
    lg = log_gaps(data, upper_hours)[rows.numpy()]
    lg = lg[~np.isnan(lg)]
    if lg.size == 0:
        return 0.0, 1.0
    return float(lg.mean()), float(max(lg.std(), 1e-3))


def _within_user_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum along axis 0, restarted at each user's first row."""
    c = np.cumsum(x, axis=0)
    before = np.concatenate([np.zeros_like(c[:1]), c[:-1]])
    return c - before[first]


def covariates_after(data: SessionData, center: float, spread: float, upper_hours: float,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(S, :data:`N_COVARIATES`): row p = the covariates when session p has just ended."""
    s = data.n_sessions
    users = data.users.numpy()
    rows = np.arange(s)
    new_user = np.ones(s, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    first = np.maximum.accumulate(np.where(new_user, rows, 0))
    end_h = data.end_us.numpy() / 3.6e9
    start_h = data.start_us.numpy() / 3.6e9

    cols: list[np.ndarray] = []
    for period in (168.0, 24.0, 12.0):
        angle = 2 * math.pi * np.mod(end_h, period) / period
        cols += [np.sin(angle), np.cos(angle)]
    cols.append(np.log(data.lengths.numpy().astype(np.float64)))
    cols.append(np.log1p(np.clip(end_h - start_h, 0.0, None)))
    cols.append(data.is_continuation.numpy().astype(np.float64))

    lg = log_gaps(data, upper_hours)
    seen = ~np.isnan(lg)
    z = np.where(seen, (lg - center) / spread, 0.0)
    n = _within_user_cumsum(seen.astype(np.float64), first)
    s1 = _within_user_cumsum(z, first)
    s2 = _within_user_cumsum(z * z, first)
    # shrunk toward the training mean (0 on this scale) and spread (1) with PRIOR_GAPS pseudo-gaps
    mean = s1 / (PRIOR_GAPS + n)
    own_mean = s1 / np.maximum(n, 1)
    var = (PRIOR_GAPS + s2 - n * own_mean * own_mean) / (PRIOR_GAPS + n)
    cols += [mean, 0.5 * np.log(np.maximum(var, 1e-6))]
    # the last three real gaps at or before p: positions in the list of all real gaps
    gap_rows = np.flatnonzero(seen)
    count = np.cumsum(seen)  # real gaps at or before p (all users)
    last = []
    for back in (1, 2, 3):
        j = count - back
        ok = j >= 0
        r = gap_rows[np.clip(j, 0, None)] if gap_rows.size else np.zeros(s, dtype=np.int64)
        ok &= (r >= first) & (gap_rows.size > 0)
        last.append((np.where(ok, z[r] if gap_rows.size else 0.0, 0.0), ok))
    (g1, ok1), (g2, ok2), (g3, ok3) = last
    cols += [g1, (~ok1).astype(np.float64)]
    k3 = ok1.astype(np.float64) + ok2 + ok3
    cols.append((g1 + g2 + g3) / np.maximum(k3, 1))
    cols.append(np.log1p(rows - first + 1.0))

    start_hour = np.floor(np.mod(start_h, 24.0)).astype(np.int64) % HOURS_OF_DAY
    onehot = np.zeros((s, HOURS_OF_DAY), dtype=np.float64)
    onehot[rows, start_hour] = 1.0
    hist = _within_user_cumsum(onehot, first)
    end_hour = np.floor(np.mod(end_h, 24.0)).astype(np.int64) % HOURS_OF_DAY
    rotate = (end_hour[:, None] + np.arange(HOURS_OF_DAY)[None]) % HOURS_OF_DAY
    shares = np.take_along_axis(hist, rotate, axis=1) / (rows - first + 1.0)[:, None]
    out = np.concatenate([np.stack(cols, axis=1), _SHARE_SCALE * shares], axis=1)
    return torch.from_numpy(out).to(dtype)


def target_covariates(after: torch.Tensor, data: SessionData) -> torch.Tensor:
    """(S, F): row r = the covariates after the user's previous session (zeros for a first session)."""
    out = torch.zeros_like(after)
    same = torch.zeros(data.n_sessions, dtype=torch.bool)
    same[1:] = data.users[1:] == data.users[:-1]
    idx = torch.nonzero(same).squeeze(1)
    out[idx] = after[idx - 1]
    return out
