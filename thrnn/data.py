"""Session tensors and user-parallel batching for the hierarchical models (docs/design.md §4).

A split is loaded once into per-session tensors (items padded to L = 20, lengths, users, gaps,
flags); a batch is a vector of session rows, so training does no per-event Python work.

Batching follows the research code (each batch = the <= ``batch_size`` users with the most
remaining sessions, each giving its next session in time order) but never stops early: every
selected session is in exactly one batch. Longest-remaining-first also needs the fewest batches
(the heaviest user's chain of sessions is the lower bound, as each session needs the previous
ones' representations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from contract import columns as C
from contract import reference
from thrnn.io import Split

SECONDS_PER_HOUR = 3600.0


@dataclass
class SessionData:
    """All sessions of a split (train then test per user), sorted by (user, session_index).

    Row ``r`` is one session. ``gap_hours`` is NaN for a user's first session; ``time_mask`` marks
    sessions whose gap is a real return time (not the first session, not a continuation).
    """

    items: torch.Tensor  # (S, L) int64, right-padded with 0
    lengths: torch.Tensor  # (S,) int64, >= 2
    users: torch.Tensor  # (S,) int64
    session_index: torch.Tensor  # (S,) int64
    gap_hours: torch.Tensor  # (S,) float64, NaN for the first session
    is_continuation: torch.Tensor  # (S,) bool
    is_test: torch.Tensor  # (S,) bool
    end_seconds: torch.Tensor  # (S,) float64, epoch seconds of the session's last event
    end_us: torch.Tensor  # (S,) int64, the same in exact epoch microseconds
    start_us: torch.Tensor  # (S,) int64, epoch microseconds of the session's first event
    n_items: int
    n_users: int
    item_train_count: torch.Tensor  # (N+1,) int64, index = item id (0 = padding, count 0)

    @property
    def n_sessions(self) -> int:
        return int(self.items.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.items.shape[1])

    @property
    def time_mask(self) -> torch.Tensor:
        return ~torch.isnan(self.gap_hours) & ~self.is_continuation

    def n_targets(self, rows: torch.Tensor | np.ndarray | None = None) -> int:
        """Next-item targets (every position but the first) of the given rows (default all)."""
        lengths = self.lengths if rows is None else self.lengths[torch.as_tensor(rows)]
        return int((lengths - 1).sum())

    def gap_buckets(self, n_buckets: int, upper_hours: float) -> torch.Tensor:
        """Gap-embedding index per session: 0 = no gap (first session), 1..n = uniform buckets over
        [0, upper_hours], gaps above the bound in the last bucket."""
        g = torch.nan_to_num(self.gap_hours, nan=0.0).clamp(0, upper_hours)
        b = torch.clamp((g / (upper_hours / n_buckets)).floor().long(), max=n_buckets - 1) + 1
        return torch.where(torch.isnan(self.gap_hours), torch.zeros_like(b), b)

    def last_rows(self, mask: torch.Tensor) -> torch.Tensor:
        """(U,) row of each user's last session within ``mask`` (-1 for a user with none)."""
        rows = torch.arange(self.n_sessions)[mask]
        last = torch.full((self.n_users,), -1, dtype=torch.long)
        last.scatter_reduce_(0, self.users[mask], rows, reduce="amax")
        return last

    def validation_mask(self, k: int) -> torch.Tensor:
        """Each user's last ``k`` training sessions (keeping at least one training session per user)."""
        val = torch.zeros(self.n_sessions, dtype=torch.bool)
        if k <= 0:
            return val
        train = ~self.is_test
        n_train = torch.bincount(self.users[train], minlength=self.n_users)
        first_row = torch.zeros(self.n_users, dtype=torch.long)
        first_row[1:] = torch.cumsum(torch.bincount(self.users, minlength=self.n_users), 0)[:-1]
        rank = torch.arange(self.n_sessions) - first_row[self.users]  # index within the user
        n_val = torch.clamp(n_train - 1, min=0).clamp(max=k)
        val = train & (rank >= (n_train - n_val)[self.users])
        return val


def load_sessions(split: Split, max_len: int = C.MAX_SESSION_LENGTH) -> SessionData:
    """Build :class:`SessionData` from a split, validating what the model relies on."""
    frames = []
    for frame, is_test in ((split.train, False), (split.test, True)):
        f = frame[[C.USER_ID, C.SESSION_INDEX, C.POSITION, C.ITEM_ID, C.EVENT_TIME,
                   C.GAP_BEFORE_SECONDS, C.IS_CONTINUATION]].copy()
        f["_test"] = is_test
        frames.append(f)
    ev = pd.concat(frames, ignore_index=True)
    if ev.empty:
        raise ValueError("the split has no events")
    ev = ev.sort_values([C.USER_ID, C.SESSION_INDEX, C.POSITION], kind="stable").reset_index(drop=True)
    n_items = max(split.n_items, int(ev[C.ITEM_ID].max()))
    n_users = max(split.n_users, int(ev[C.USER_ID].max()) + 1)
    user = ev[C.USER_ID].to_numpy(np.int64)
    sidx = ev[C.SESSION_INDEX].to_numpy(np.int64)
    pos = ev[C.POSITION].to_numpy(np.int64)
    item = ev[C.ITEM_ID].to_numpy(np.int64)
    if item.min() < 1:
        raise ValueError("item ids must be >= 1 (0 is padding)")
    if user.min() < 0:
        raise ValueError("user ids must be >= 0")
    new = np.ones(len(ev), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (sidx[1:] != sidx[:-1])
    row = np.cumsum(new) - 1
    n_sessions = int(row[-1]) + 1
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, len(ev)))
    expected_pos = np.arange(len(ev)) - starts[row]
    if not np.array_equal(pos, expected_pos):
        bad = int(np.flatnonzero(pos != expected_pos)[0])
        raise ValueError(f"positions of user {user[bad]} session {sidx[bad]} are not 0..len-1")
    if lengths.max() > max_len:
        raise ValueError(f"a session has {lengths.max()} events, more than L = {max_len} (sessionize cuts them)")
    if lengths.min() < 2:
        raise ValueError("sessions must have at least 2 events (sessionize drops shorter ones)")
    s_user = user[starts]
    s_idx = sidx[starts]
    same_user = s_user[1:] == s_user[:-1]
    if np.any(same_user & (s_idx[1:] <= s_idx[:-1])):
        raise ValueError("duplicate session_index within a user")
    s_test = ev["_test"].to_numpy()[starts]
    if np.any(same_user & s_test[:-1] & ~s_test[1:]):
        raise ValueError("a user's test session comes before one of their training sessions")
    items = np.zeros((n_sessions, max_len), dtype=np.int64)
    items[row, pos] = item
    gap = ev[C.GAP_BEFORE_SECONDS].to_numpy(np.float64)[starts] / SECONDS_PER_HOUR
    t = ev[C.EVENT_TIME]
    t = t.dt.tz_convert("UTC") if t.dt.tz is not None else t.dt.tz_localize("UTC")
    end_us = ((t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)
    start_us = end_us[starts]
    end_us = end_us[starts + lengths - 1]
    train_count = np.zeros(n_items + 1, dtype=np.int64)
    if C.TRAIN_COUNT in split.items.columns and len(split.items):
        train_count[split.items[C.ITEM_ID].to_numpy(np.int64)] = split.items[C.TRAIN_COUNT].to_numpy(np.int64)
    else:
        np.add.at(train_count, item[~ev["_test"].to_numpy()], 1)
    return SessionData(
        items=torch.from_numpy(items),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        users=torch.from_numpy(s_user),
        session_index=torch.from_numpy(s_idx),
        gap_hours=torch.from_numpy(gap),
        is_continuation=torch.from_numpy(ev[C.IS_CONTINUATION].to_numpy(bool)[starts]),
        is_test=torch.from_numpy(s_test.astype(bool)),
        end_seconds=torch.from_numpy(end_us / 1e6),
        end_us=torch.from_numpy(end_us),
        start_us=torch.from_numpy(start_us),
        n_items=n_items,
        n_users=n_users,
        item_train_count=torch.from_numpy(train_count),
    )


def user_parallel_batches(data: SessionData, mask: torch.Tensor, batch_size: int) -> list[np.ndarray]:
    """Session rows of ``mask`` in batches: the <= ``batch_size`` users with most remaining sessions,
    each with its next session in order (ties: lower user id first). Every masked row appears once."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rows = np.flatnonzero(mask.numpy())
    users = data.users.numpy()[rows]
    counts = np.bincount(users, minlength=data.n_users)
    start = np.zeros(data.n_users, dtype=np.int64)
    start[1:] = np.cumsum(counts)[:-1]
    remaining = counts.copy()
    taken = np.zeros(data.n_users, dtype=np.int64)
    active = np.flatnonzero(remaining)
    batches: list[np.ndarray] = []
    while active.size:
        if active.size <= batch_size:
            chosen = active
        else:
            order = np.lexsort((active, -remaining[active]))
            chosen = np.sort(active[order[:batch_size]])
        batches.append(rows[start[chosen] + taken[chosen]])
        taken[chosen] += 1
        remaining[chosen] -= 1
        if remaining[chosen].min() == 0:
            active = active[remaining[active] > 0]
    return batches


class HistoryState:
    """Per-user FIFO of the last K session representations and the gap buckets before them.

    Left-aligned: slots 0..count-1 hold the oldest..newest entry, the rest are zero (the research
    code's dummy entry), so the inter GRU's output at ``max(count, 1) - 1`` ignores the padding.
    Representations are detached constants, as in the research code.
    """

    def __init__(self, n_users: int, k: int, hidden: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.k = k
        self.reps = torch.zeros(n_users, k, hidden, device=device, dtype=dtype)
        self.buckets = torch.zeros(n_users, k, dtype=torch.long, device=device)
        self.counts = torch.zeros(n_users, dtype=torch.long, device=device)
        self.counts_cpu = torch.zeros(n_users, dtype=torch.long)  # mirror: packing needs CPU lengths

    def get(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.reps[users], self.buckets[users], self.counts[users]

    def push(self, users: torch.Tensor, reps: torch.Tensor, buckets: torch.Tensor,
             users_cpu: torch.Tensor | None = None) -> None:
        """Append one entry per (distinct) user, dropping the oldest when the FIFO is full."""
        r, b, c = self.get(users)
        full = c >= self.k
        r = torch.where(full[:, None, None], torch.roll(r, -1, dims=1), r)
        b = torch.where(full[:, None], torch.roll(b, -1, dims=1), b)
        slot = c.clamp(max=self.k - 1)
        ar = torch.arange(users.shape[0], device=users.device)
        r[ar, slot] = reps.detach().to(r.dtype)
        b[ar, slot] = buckets
        self.reps[users] = r
        self.buckets[users] = b
        self.counts[users] = (c + 1).clamp(max=self.k)
        uc = users.cpu() if users_cpu is None else users_cpu
        self.counts_cpu[uc] = (self.counts_cpu[uc] + 1).clamp(max=self.k)


# The pandas sessionizer of tests and benches is the job's reference (docs/design.md §3): the same
# rules, ids and dtypes as the Spark job; kept here under its old name for callers.
sessionize_frame = reference.sessionize_frame


def read_jodie_tsv(path: str, max_rows: int | None = None) -> pd.DataFrame:
    """A JODIE excerpt (TSV, no header: user, item, seconds) as columns user, item, time."""
    df = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "time"], nrows=max_rows)
    if df.isna().any().any() or not math.isfinite(float(df["time"].max())):
        raise ValueError(f"{path}: malformed JODIE rows")
    return df
