"""Training batches laid out once, before the first epoch (docs/train_speed.md).

The user-parallel batches (:func:`thrnn.data.user_parallel_batches`) are the same every epoch, and so
is everything a step reads besides the parameters: which earlier sessions fill each user's FIFO of
session representations (a user's j-th training session reads the representations of its previous
``min(j, K)`` ones, whatever the batching), the packed layouts of both GRU levels, the targets and
the loss masks. :func:`plan_batches` computes all of it up front as tensors, so a step does no
per-batch Python or numpy work and no device synchronisation.

Both GRU levels use PyTorch's packed layout (time-major; step t holds the first ``sizes[t]`` rows):

- inter level: rows sorted by the number of FIFO slots they read (``max(count, 1)``: a user without
  an earlier session reads one empty slot), descending; slot s of a row is its s-th oldest entry;
- intra level: rows sorted by their number of inputs (length - 1), descending; the batch's inter
  states are permuted into that order (``intra_order``).

Within a batch the order of the rows changes nothing but float summation order: the loss is a
mean over the batch's targets and each user's FIFO is its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from thrnn.data import SessionData
from thrnn.models.fast_gru import previous_index


@dataclass
class TrainBatch:
    """One step's data. Positions ("pos") index the batch's rows in inter order."""

    rows: torch.Tensor  # (B,) session rows, inter order
    users: torch.Tensor  # (B,)
    n_targets: int  # next-item targets of the batch
    inter_sizes: tuple[int, ...]
    inter_prev: torch.Tensor  # (Ni,) fast_gru.previous_index of inter_sizes
    inter_reps: torch.Tensor  # (Ni,) row of the representation store per packed slot (S: the empty slot)
    inter_buckets: torch.Tensor  # (Ni,) gap bucket per packed slot (0: none)
    inter_users: torch.Tensor  # (Ni,) user id per packed slot
    inter_last: torch.Tensor  # (B,) packed index of each row's newest slot
    intra_order: torch.Tensor  # (B,) positions in intra order
    intra_rows: torch.Tensor  # (B,) session rows, intra order
    intra_sizes: tuple[int, ...]
    intra_prev: torch.Tensor  # (Nt,)
    intra_items: torch.Tensor  # (Nt,) input item per packed position
    intra_last: torch.Tensor  # (B,) packed index of each (intra-ordered) row's last input
    target_items: torch.Tensor  # (Nt,) the item each packed position predicts
    target_events: torch.Tensor  # (Nt,) flat event index of that target (personal-history tables)
    first_pos: torch.Tensor  # (F,) positions whose first item is a target (not a continuation)
    first_items: torch.Tensor  # (F,)
    time_pos: torch.Tensor  # (G,) positions whose gap is a time target
    n_first: int
    n_time: int
    extra: dict[str, torch.Tensor]  # per-batch slices of per-row/per-event tables (see plan_batches)

    def to(self, device: torch.device) -> TrainBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()
                 if k != "extra"}
        # packed-sequence step counts and the session rows used for CPU bookkeeping stay as they are
        return TrainBatch(**moved, extra={k: v.to(device) for k, v in self.extra.items()})


def fifo_sources(data: SessionData, mask: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``mask``: ``(count, source)`` where ``count`` = min(j, k) for the row's user's
    j-th masked session (0-based, in session order) and ``source`` (S, k) the rows of the user's
    previous ``count`` masked sessions, oldest first (-1 beyond ``count``; rows outside ``mask``: 0, -1).
    This is what the per-user FIFO holds when the row is trained, for any batching that trains each
    user's sessions in order."""
    rows = np.flatnonzero(mask.numpy())
    users = data.users.numpy()[rows]
    count = np.zeros(data.n_sessions, dtype=np.int64)
    source = np.full((data.n_sessions, k), -1, dtype=np.int64)
    if rows.size == 0:
        return count, source
    new_user = np.ones(rows.size, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    first = np.flatnonzero(new_user)
    j = np.arange(rows.size) - np.repeat(first, np.diff(np.append(first, rows.size)))  # rows sorted by user
    c = np.minimum(j, k)
    count[rows] = c
    for s in range(k):
        # slot s holds the (j - c + s)-th session of the user, i.e. masked index p - c + s
        ok = s < c
        p = np.flatnonzero(ok)
        source[rows[p], s] = rows[p - c[p] + s]
    return count, source


def _packed(steps: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Packed layout of rows with ``steps`` (non-increasing, >= 1) steps each: (sizes, row, step) of
    every packed position, time-major."""
    t_max = int(steps[0])
    sizes = tuple(int((steps > t).sum()) for t in range(t_max))
    valid = np.arange(t_max)[:, None] < steps[None, :]  # (T, B)
    t, b = np.nonzero(valid)  # row-major: by step, then row
    return sizes, b, t


def plan_batches(data: SessionData, batches: list[np.ndarray], mask: torch.Tensor, history: int,
                 first_ok: torch.Tensor, time_ok: torch.Tensor, buckets: torch.Tensor,
                 row_tables: dict[str, torch.Tensor] | None = None,
                 event_tables: dict[str, torch.Tensor] | None = None,
                 first_tables: dict[str, torch.Tensor] | None = None) -> list[TrainBatch]:
    """:class:`TrainBatch` of each batch of session rows (of ``mask``, each user's sessions in order).

    ``row_tables`` (S, ...) are sliced to the batch's time positions (``extra["time_<name>"]``),
    ``event_tables`` (events, ...) to its targets' flat event indices (``extra["next_<name>"]``) and
    ``first_tables`` (S, ...) to its first-item positions (``extra["first_<name>"]``)."""
    count, source = fifo_sources(data, mask, history)
    lengths = data.lengths.numpy()
    items = data.items.numpy()
    users_all = data.users.numpy()
    first_ok_np, time_ok_np, buckets_np = first_ok.numpy(), time_ok.numpy(), buckets.numpy()
    row_start = np.zeros(data.n_sessions, dtype=np.int64)
    row_start[1:] = np.cumsum(lengths)[:-1]
    empty = data.n_sessions  # the representation store's zero row
    out = []
    for rows0 in batches:
        rows0 = np.asarray(rows0, dtype=np.int64)
        steps0 = np.maximum(count[rows0], 1)
        order = np.argsort(-steps0, kind="stable")
        rows = rows0[order]
        steps = steps0[order]
        c = count[rows]
        i_sizes, i_b, i_s = _packed(steps)
        src = source[rows[i_b], np.minimum(i_s, source.shape[1] - 1)]
        src = np.where(i_s < c[i_b], src, -1)
        inter_reps = np.where(src >= 0, src, empty)
        inter_buckets = np.where(src >= 0, buckets_np[np.maximum(src, 0)], 0)
        i_off = np.concatenate([[0], np.cumsum(i_sizes)[:-1]])
        inter_last = i_off[steps - 1] + np.arange(rows.size)
        n_in = lengths[rows] - 1
        intra_order = np.argsort(-n_in, kind="stable")
        r_intra = rows[intra_order]
        t_sizes, t_b, t_t = _packed(n_in[intra_order])
        t_off = np.concatenate([[0], np.cumsum(t_sizes)[:-1]])
        intra_last = t_off[n_in[intra_order] - 1] + np.arange(rows.size)
        t_rows = r_intra[t_b]
        first_pos = np.flatnonzero(first_ok_np[rows])
        time_pos = np.flatnonzero(time_ok_np[rows])
        target_events = row_start[t_rows] + t_t + 1
        extra: dict[str, torch.Tensor] = {}
        for name, table in (event_tables or {}).items():
            extra[f"next_{name}"] = table[torch.from_numpy(target_events)]
        for name, table in (first_tables or {}).items():
            extra[f"first_{name}"] = table[torch.from_numpy(rows[first_pos])]
        for name, table in (row_tables or {}).items():
            extra[f"time_{name}"] = table[torch.from_numpy(rows[time_pos])]
        t = torch.from_numpy
        out.append(TrainBatch(
            rows=t(rows), users=t(users_all[rows]), n_targets=int(n_in.sum()),
            inter_sizes=i_sizes, inter_prev=previous_index(i_sizes), inter_reps=t(inter_reps),
            inter_buckets=t(inter_buckets), inter_users=t(users_all[rows][i_b]), inter_last=t(inter_last),
            intra_order=t(intra_order), intra_rows=t(r_intra), intra_sizes=t_sizes,
            intra_prev=previous_index(t_sizes), intra_items=t(items[t_rows, t_t]), intra_last=t(intra_last),
            target_items=t(items[t_rows, t_t + 1]), target_events=t(target_events),
            first_pos=t(first_pos), first_items=t(items[rows[first_pos], 0]), time_pos=t(time_pos),
            n_first=int(first_pos.size), n_time=int(time_pos.size), extra=extra))
    return out
