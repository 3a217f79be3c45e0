"""Personal-history components of the repeat-aware output mixture (docs/model.md).

Users repeat themselves: the next item is often one they had before, or the one that followed the
current item the last times they had it. Each component is a distribution over items computed from
data only (nothing here is learned); :mod:`thrnn.models.mixture` mixes them with the neural softmax.

For a *target* at flat event index ``t`` of user ``u`` (the event the model predicts; for a user's
next, not yet seen session ``t`` is one past the user's last event) the history is the user's events
``user_start[u] .. t-1`` in time order (training sessions, then earlier test sessions, then earlier
positions of the target's own session), read through a window of the last ``window`` events, and
``cur`` = event ``t-1``. Components, in :data:`COMPONENTS` order:

- ``global``: ``P(i | cur)`` from global transition counts over the count rows (training sessions):
  within-session transitions for the next item, last item of a session -> first item of the next
  session for the first item (the counts of ``thrnn.baselines.ranking.transition_matrix``). A
  training target's own transition is left out of the counts it is scored with (leave-one-out).
- ``cooc``: session co-occurrence (sequential rules): ``Σ_j w_j C(i | x_j)`` over the query events
  ``x_j`` (the session of ``cur`` up to ``cur``: the current session for the next item, the previous
  session for the first item), ``w_j = 1 / (t - j)``, where ``C(i | x)`` is the row-normalised count
  of ``x`` followed later in the same training session by ``i``, each pair weighted 1 / distance.
  Training targets leave their own session's pairs out.
- ``cooc_any``: the same with pairs in either order (``C + Cᵀ``): items of sessions that share the
  query's items, as session-kNN scores them.
- ``user``: the user's own transitions from ``cur``: the items that followed earlier occurrences of
  ``cur`` in the window (pairs may cross session boundaries), normalised.
- ``decay``: the user's exponentially decayed item frequency, ``decay ** age`` per event (age 0 =
  the latest), normalised to sum 1.

A component is *unavailable* for a target when it has no mass there (no history, ``cur`` never seen
in the counts, ...); the mixture then renormalises over the others. Padding (item 0) never has mass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from thrnn.data import SessionData

COMPONENTS: tuple[str, ...] = ("global", "cooc", "cooc_any", "user", "user2", "decay", "recent")
RECENT_DECAY = 0.5
# Bound on the (targets x window) block handled at once when precomputing target probabilities.
_WINDOW_BLOCK = 1 << 23
# Targets whose probabilities are computed together (bounds the co-occurrence query arrays).
_TARGET_CHUNK = 1 << 17


class PersonalHistory:
    """Flat per-user event history of a :class:`SessionData` and the component distributions.

    ``count_rows`` (S,) bool selects the sessions whose transitions make the global counts (the
    training sessions of the run: never validation or test sessions).
    """

    def __init__(self, data: SessionData, count_rows: torch.Tensor, *, window: int = 500,
                 decay: float = 0.97) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.window, self.decay = int(window), float(decay)
        self._device_flat: dict[str, torch.Tensor] = {}
        self.n_items = data.n_items
        lengths = data.lengths.numpy()
        valid = np.arange(data.max_len)[None, :] < lengths[:, None]
        self.flat = torch.from_numpy(data.items.numpy()[valid].astype(np.int64))  # row order = time order per user
        row_start = np.zeros(data.n_sessions, dtype=np.int64)
        row_start[1:] = np.cumsum(lengths)[:-1]
        self.row_start = torch.from_numpy(row_start)
        users = data.users.numpy()
        first_row = np.full(data.n_users, -1, dtype=np.int64)
        last_row = np.full(data.n_users, -1, dtype=np.int64)
        rows = np.arange(data.n_sessions)
        np.maximum.at(last_row, users, rows)
        first_row[users[::-1]] = rows[::-1]  # the last write per user wins: its first row
        self.user_start = torch.from_numpy(np.where(first_row >= 0, row_start[np.maximum(first_row, 0)], 0))
        self.user_end = torch.from_numpy(  # one past the user's last event
            np.where(last_row >= 0, row_start[np.maximum(last_row, 0)] + lengths[np.maximum(last_row, 0)], 0))
        self.event_user = torch.from_numpy(np.repeat(users, lengths))
        self.event_row = torch.from_numpy(np.repeat(np.arange(data.n_sessions), lengths))
        self._data = data
        self.cooc = _cooc_counts(data, count_rows.numpy())
        self._cooc = {kind: _CoocTable(c) for kind, c in (("cooc", self.cooc), ("cooc_any", (self.cooc + self.cooc.T).tocsr()))}
        self.within, self.between = _transition_counts(data, count_rows.numpy(), row_start)
        self.within_total = np.asarray(self.within.sum(1)).ravel()
        self.between_total = np.asarray(self.between.sum(1)).ravel()
        # which events' own transitions are in the counts (leave-one-out for training targets)
        counted = np.repeat(count_rows.numpy(), lengths)
        pos = np.arange(len(counted)) - np.repeat(row_start, lengths)
        self._counted_within = counted & (pos > 0)
        first = pos == 0
        prev_same_user = np.zeros(len(counted), dtype=bool)
        prev_same_user[1:] = self.event_user.numpy()[1:] == self.event_user.numpy()[:-1]
        cont = np.repeat(data.is_continuation.numpy(), lengths)
        self._counted_between = counted & first & prev_same_user & ~cont

    def _flat_on(self, device: torch.device) -> torch.Tensor:
        cached = self._device_flat.get(str(device))
        if cached is None:
            cached = self._device_flat[str(device)] = self.flat.to(device)
        return cached

    # ------------------------------------------------------------------ session co-occurrence
    def _query(self, t: torch.Tensor, ustart: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target index, flat event, weight) of every query event: the session of event t-1, up to t-1."""
        t_np, us = t.numpy(), ustart.numpy()
        has = t_np > us
        cur = np.where(has, t_np - 1, 0)
        qstart = self.row_start.numpy()[self.event_row.numpy()[cur]]
        n = np.where(has, t_np - qstart, 0)
        idx = np.repeat(np.arange(len(t_np)), n)
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        ev = np.repeat(qstart, n) + offset
        return idx, ev, 1.0 / (np.repeat(t_np, n) - ev)

    def _cooc_target(self, t: torch.Tensor, ustart: torch.Tensor, tgt: torch.Tensor, first: bool,
                     leave_one_out: bool, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(P(target), mass) of the co-occurrence component ``kind`` for each target."""
        idx, ev, w = self._query(t, ustart)
        if len(idx) == 0:
            return np.zeros(len(t)), np.zeros(len(t))
        q_items = self.flat.numpy()[ev]
        table = self._cooc[kind]
        tg = tgt.numpy()[idx]
        num = np.asarray(table.counts[q_items.copy(), tg.copy()]).ravel().astype(np.float64)
        den = table.total[q_items].astype(np.float64)
        if leave_one_out and not first:
            # the target's own session: its pairs (query event -> target) and the query events' row sums
            t_ev = t.numpy()[idx]
            own = self._counted_within[t_ev]
            row = self.event_row.numpy()[t_ev]
            rows = np.unique(row[own])
            own_pairs, own_rowsum = _own_session_counts(self._data, rows)[kind]
            at = np.searchsorted(rows, row).clip(max=max(len(rows) - 1, 0))
            j = ev - self.row_start.numpy()[row]
            p = t_ev - self.row_start.numpy()[row]
            if len(rows):
                num -= np.where(own, own_pairs[at, j, p], 0.0)
                den -= np.where(own, own_rowsum[at, j], 0.0)
        known = den > 1e-9
        contrib = np.where(known, w * num / np.maximum(den, 1e-300), 0.0)
        p_t = np.bincount(idx, contrib, minlength=len(t))
        norm = np.bincount(idx, w * known, minlength=len(t))
        mass = np.bincount(idx, w * np.where(known, den, 0.0), minlength=len(t))
        return np.where(norm > 0, p_t / np.maximum(norm, 1e-300), 0.0), np.where(norm > 0, mass, 0.0)

    def seen_before(self) -> torch.Tensor:
        """(E,) bool: the event's item occurred earlier in the same user's history (any distance): the
        target "repeats" an item of the user rather than being new to them."""
        users = self.event_user.numpy()
        items = self.flat.numpy()
        order = np.lexsort((np.arange(len(items)), items, users))  # by user, item, time
        u, i = users[order], items[order]
        repeat = np.zeros(len(items), dtype=bool)
        repeat[order[1:]] = (u[1:] == u[:-1]) & (i[1:] == i[:-1])
        return torch.from_numpy(repeat)

    @property
    def n_events(self) -> int:
        return int(self.flat.numel())

    # ------------------------------------------------------------------ windows
    def _window(self, t: torch.Tensor, ustart: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, W) items of events t-1, t-2, ... (0 where before the user's first event) and their validity."""
        k = torch.arange(self.window, device=t.device)
        j = t[:, None] - 1 - k[None, :]
        ok = j >= ustart[:, None]
        flat = self._flat_on(t.device)
        items = torch.where(ok, flat[j.clamp(min=0)], torch.zeros((), dtype=flat.dtype, device=t.device))
        return items, ok

    def _weights(self, t: torch.Tensor, ustart: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(items (T, W), [unnormalised weights (T, W) of each window component in :data:`COMPONENTS`
        order]); a row's sum is the component's mass (0 = unavailable)."""
        items, ok = self._window(t, ustart)
        dev = t.device
        ages = torch.arange(self.window, device=dev, dtype=torch.float64)
        dec = torch.where(ok, self.decay ** ages, torch.zeros((), dtype=torch.float64, device=dev))
        cur = items[:, :1]
        # window entry k is event t-1-k; its predecessor is entry k+1 (event t-2-k)
        pred = torch.cat([items[:, 1:], torch.zeros_like(cur)], dim=1)
        pred_ok = torch.cat([ok[:, 1:], torch.zeros_like(ok[:, :1])], dim=1)
        follows = (pred == cur) & pred_ok & ok & (cur > 0)
        usr = follows.double()
        # second order: the two events before the entry equal the two before the target
        prev = items[:, 1:2]
        pred2 = torch.cat([items[:, 2:], torch.zeros_like(items[:, :2])], dim=1)
        pred2_ok = torch.cat([ok[:, 2:], torch.zeros_like(ok[:, :2])], dim=1)
        usr2 = (follows & (pred2 == prev) & pred2_ok & ok[:, 1:2]).double()
        rec = torch.where(ok, RECENT_DECAY ** ages, torch.zeros((), dtype=torch.float64, device=dev))
        return items, [usr, usr2, dec, rec]

    # ------------------------------------------------------------------ target probabilities
    def target_probs(self, t: torch.Tensor, u: torch.Tensor, first: bool, targets: torch.Tensor | None = None,
                     leave_one_out: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P (T, K), mass (T, K))``: each component's probability of the target item, and its mass
        before normalisation (transition counts from ``cur``, decayed event weights; 0 = unavailable).

        ``targets`` defaults to the items at ``t`` (training targets); ``leave_one_out`` removes the
        target's own transition (and its session's co-occurrence pairs) from the global counts when it
        is counted there. Handled in chunks of targets, so memory stays bounded on any split.
        """
        t, u = t.long().cpu(), u.long().cpu()
        tgt = self.flat[t] if targets is None else targets.long().cpu()
        parts = [self._target_probs(t[s:s + _TARGET_CHUNK], u[s:s + _TARGET_CHUNK], first,
                                    tgt[s:s + _TARGET_CHUNK], leave_one_out) for s in range(0, len(t), _TARGET_CHUNK)]
        if not parts:
            empty = torch.zeros(0, len(COMPONENTS))
            return empty, empty.clone()
        return torch.cat([p for p, _ in parts]), torch.cat([m for _, m in parts])

    def _target_probs(self, t: torch.Tensor, u: torch.Tensor, first: bool, tgt: torch.Tensor,
                      leave_one_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out_p = torch.zeros(len(t), len(COMPONENTS), dtype=torch.float64)
        out_a = torch.zeros(len(t), len(COMPONENTS), dtype=torch.float64)
        ustart = self.user_start[u]
        has_cur = t > ustart
        cur = torch.where(has_cur, self.flat[(t - 1).clamp(min=0)], torch.zeros_like(t)).numpy()
        counts, total = (self.between, self.between_total) if first else (self.within, self.within_total)
        c = np.asarray(counts[cur.copy(), tgt.numpy().copy()]).ravel().astype(np.float64)
        tot = total[cur].astype(np.float64)
        if leave_one_out:
            own = (self._counted_between if first else self._counted_within)[t.numpy()]
            c -= own
            tot -= own
        tot = np.where(has_cur.numpy(), tot, 0.0)
        out_a[:, 0] = torch.from_numpy(tot)
        out_p[:, 0] = torch.from_numpy(np.where(tot > 0, c / np.maximum(tot, 1), 0.0))
        for k, kind in ((1, "cooc"), (2, "cooc_any")):
            p_c, m_c = self._cooc_target(t, ustart, tgt, first, leave_one_out, kind)
            out_p[:, k], out_a[:, k] = torch.from_numpy(p_c), torch.from_numpy(m_c)
        block = max(1, _WINDOW_BLOCK // self.window)
        for s in range(0, len(t), block):
            sl = slice(s, s + block)
            items, weights = self._weights(t[sl], ustart[sl])
            hit = items == tgt[sl, None]
            for k, w in enumerate(weights, start=3):
                mass = w.sum(1)
                out_p[sl, k] = (w * hit).sum(1) / mass.clamp(min=1e-300)
                out_a[sl, k] = mass
        return out_p.float(), out_a.float()

    # ------------------------------------------------------------------ dense distributions
    def dense(self, t: torch.Tensor, u: torch.Tensor, first: bool, n_columns: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(P (T, K, n_columns), mass (T, K))`` over item ids 0..n_columns-1 (column 0 = padding, always
        0); mass as in :meth:`target_probs`. The reference of :meth:`sparse`, which ranking uses instead
        (T * K * n_columns floats: 2.8 MB per target at 100k items)."""
        t_cpu = t.long().cpu()
        u_cpu = u.long().cpu()
        ustart = self.user_start[u_cpu]
        has_cur = t_cpu > ustart
        cur = torch.where(has_cur, self.flat[(t_cpu - 1).clamp(min=0)], torch.zeros_like(t_cpu)).numpy()
        counts, total = (self.between, self.between_total) if first else (self.within, self.within_total)
        tot = np.where(has_cur.numpy(), total[cur], 0).astype(np.float64)
        rows = counts[cur].toarray()[:, :n_columns] / np.maximum(tot, 1)[:, None]
        out = torch.zeros(len(t_cpu), len(COMPONENTS), n_columns, dtype=torch.float32, device=device)
        width = min(rows.shape[1], n_columns)
        out[:, 0, :width] = torch.from_numpy(rows[:, :width]).float().to(device)
        mass = torch.zeros(len(t_cpu), len(COMPONENTS), dtype=torch.float32, device=device)
        mass[:, 0] = torch.from_numpy(tot).float().to(device)
        q_rows, q_ev, q_w = self._query(t_cpu, ustart)
        q_items = self.flat.numpy()[q_ev]
        q = sp.csr_matrix((q_w, (q_rows, q_items)), shape=(len(t_cpu), self.n_items + 1))
        for k, kind in ((1, "cooc"), (2, "cooc_any")):
            table = self._cooc[kind]
            known = np.bincount(q_rows, q_w * (table.total[q_items] > 0), minlength=len(t_cpu))
            co = (q @ table.normalised).toarray()[:, :n_columns] / np.maximum(known, 1e-300)[:, None]
            out[:, k, :co.shape[1]] = torch.from_numpy(co).float().to(device)
            q_mass = np.bincount(q_rows, q_w * table.total[q_items], minlength=len(t_cpu))
            mass[:, k] = torch.from_numpy(np.where(known > 0, q_mass, 0.0)).float().to(device)
        items, weights = self._weights(t_cpu.to(device), ustart.to(device))
        for k, w in enumerate(weights, start=3):
            m = w.sum(1)
            out[:, k].scatter_add_(1, items, (w / m.clamp(min=1e-300)[:, None]).float())
            mass[:, k] = m.float()
        out[:, :, 0] = 0.0
        return out, mass

    def sparse(self, t: torch.Tensor, u: torch.Tensor, first: bool, n_columns: int,
               device: torch.device | str = "cpu") -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                                                           torch.Tensor]:
        """The entries of :meth:`dense` that can be non-zero, without the (T, K, n_columns) tensor:
        ``([(rows, items, values) per component in COMPONENTS order], mass (T, K))``.

        ``values`` (float32) equal the dense entries bit for bit (the same float64 divisions, the same
        float32 scatter-add of window weights in window order); within one component each (row,
        item) appears once and rows do not decrease (the scorer cuts them into blocks of rows); items
        are in 1..n_columns-1. A component's total entries are bounded by
        its rows' transition counts, the co-occurrence neighbourhood of the query and the window,
        not by the catalogue: the ranking of docs/eval_speed.md adds them to the dense neural scores.
        """
        t_cpu = t.long().cpu()
        u_cpu = u.long().cpu()
        n_t = len(t_cpu)
        dev = torch.device(device)
        ustart = self.user_start[u_cpu]
        has_cur = t_cpu > ustart
        cur = torch.where(has_cur, self.flat[(t_cpu - 1).clamp(min=0)], torch.zeros_like(t_cpu)).numpy()
        counts, total = (self.between, self.between_total) if first else (self.within, self.within_total)
        tot = np.where(has_cur.numpy(), total[cur], 0).astype(np.float64)
        mass = torch.zeros(n_t, len(COMPONENTS), dtype=torch.float32)
        mass[:, 0] = torch.from_numpy(tot).float()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        sub = counts[cur]
        r = np.repeat(np.arange(n_t), np.diff(sub.indptr))
        parts.append((r, sub.indices, sub.data / np.maximum(tot, 1)[r]))
        q_rows, q_ev, q_w = self._query(t_cpu, ustart)
        q_items = self.flat.numpy()[q_ev]
        q = sp.csr_matrix((q_w, (q_rows, q_items)), shape=(n_t, self.n_items + 1))
        for k, kind in ((1, "cooc"), (2, "cooc_any")):
            table = self._cooc[kind]
            known = np.bincount(q_rows, q_w * (table.total[q_items] > 0), minlength=n_t)
            co = q @ table.normalised
            r = np.repeat(np.arange(n_t), np.diff(co.indptr))
            parts.append((r, co.indices, co.data / np.maximum(known, 1e-300)[r]))
            q_mass = np.bincount(q_rows, q_w * table.total[q_items], minlength=n_t)
            mass[:, k] = torch.from_numpy(np.where(known > 0, q_mass, 0.0)).float()
        out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for r, items_k, v in parts:  # the count tables hold real items (>= 1) of the split's catalogue
            if n_columns <= self.n_items:
                keep = items_k < n_columns
                r, items_k, v = r[keep], items_k[keep], v[keep]
            out.append((torch.from_numpy(r).to(dev), torch.from_numpy(items_k).to(dev).long(),
                        torch.from_numpy(v).float().to(dev)))
        items, weights = self._weights(t_cpu.to(dev), ustart.to(dev))
        m = torch.stack([w.sum(1) for w in weights])  # (4, T): each window component's mass, over the whole window
        # A row's events fill a prefix of its window; past the longest prefix of these targets the entries
        # are empty (no item, weight 0) and make no value: dropped before the per-entry work.
        width = max(1, int((items > 0).sum(1).max())) if items.shape[0] else 1
        items, weights = items[:, :width], [w[:, :width] for w in weights]
        # Each window item's value is the float32 sum of its window entries in window order, as the dense
        # scatter_add_ makes it: entries are summed into the column of the item's first entry in the window.
        first_pos = _first_occurrence(items)
        lead = (first_pos == torch.arange(items.shape[1], device=dev)) & (items > 0) & (items < n_columns)
        values = torch.stack(weights) / m.clamp(min=1e-300)[:, :, None]
        v = torch.zeros(values.shape, dtype=torch.float32, device=dev)
        v.scatter_add_(2, first_pos.expand_as(v).contiguous(), values.float())
        sel = lead & (v != 0)
        comp, rows_w, cols_w = sel.nonzero(as_tuple=True)  # component-major
        sizes = torch.bincount(comp, minlength=len(weights)).tolist()
        for rows_k, items_k, v_k in zip(rows_w.split(sizes), items[rows_w, cols_w].split(sizes), v[sel].split(sizes),
                                        strict=True):
            out.append((rows_k, items_k, v_k))
        mass[:, 3:] = m.t().float().cpu()
        return out, mass.to(dev)


def _first_occurrence(items: torch.Tensor) -> torch.Tensor:
    """(T, W) position of the first entry of each row holding the same item as entry (t, w)."""
    w = items.shape[1]
    order_items, perm = torch.sort(items, dim=1, stable=True)  # equal items keep window order
    starts = torch.ones_like(order_items, dtype=torch.bool)
    starts[:, 1:] = order_items[:, 1:] != order_items[:, :-1]
    pos = torch.arange(w, device=items.device).expand_as(items)
    group_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    first_sorted = perm.gather(1, group_start)
    return torch.empty_like(perm).scatter_(1, perm, first_sorted)


def _pair_weights(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pair weights (S, L, L) of sessions ``items`` (S, L): ``1 / (r - q)`` for positions q < r."""
    pos = torch.arange(items.shape[1])
    valid = pos[None, :] < lengths[:, None]
    dist = (pos[None, :] - pos[:, None]).float()
    d = torch.where(dist > 0, 1.0 / dist.clamp(min=1), torch.zeros(()))
    return d[None] * (valid[:, :, None] & valid[:, None, :]).float()


def _cooc_counts(data: SessionData, count_rows: np.ndarray) -> sp.csr_matrix:
    """Session co-occurrence counts over ``count_rows``: ``C[a, b] = Σ 1 / (r - q)`` over pairs of
    positions q < r of one session holding items a, b; (N+1, N+1) CSR."""
    n = data.n_items + 1
    rows = np.flatnonzero(count_rows)
    src, dst, val = [], [], []
    for lo in range(0, len(rows), 4096):  # bounded (block, L, L) pair tensors
        block = rows[lo:lo + 4096]
        items = data.items[block]
        w = _pair_weights(items, data.lengths[block])
        s_idx, q_idx, r_idx = torch.nonzero(w, as_tuple=True)
        src.append(items[s_idx, q_idx].numpy())
        dst.append(items[s_idx, r_idx].numpy())
        val.append(w[s_idx, q_idx, r_idx].double().numpy())
    if not src:
        return sp.csr_matrix((n, n))
    return sp.coo_matrix((np.concatenate(val), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)).tocsr()


class _CoocTable:
    """Co-occurrence counts with their row totals and row-normalised form."""

    def __init__(self, counts: sp.csr_matrix) -> None:
        self.counts = counts
        self.total = np.asarray(counts.sum(1)).ravel()
        self.normalised = (sp.diags(1.0 / np.maximum(self.total, 1e-300)) @ counts).tocsr()


def _own_session_counts(data: SessionData, rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The own part of the co-occurrence tables of the sessions ``rows``, for leave-one-out: per kind,
    ``own_pairs[i, j, p]`` is what session ``rows[i]`` adds to ``C[x_j, x_p]`` and ``own_rowsum[i, j]``
    what it adds to row ``x_j``'s total."""
    items = data.items[rows]
    w = _pair_weights(items, data.lengths[rows])
    valid = items > 0
    e = ((items[:, :, None] == items[:, None, :]) & valid[:, :, None] & valid[:, None, :]).float()
    pairs = e @ w @ e.transpose(1, 2)
    rows = (e @ w.sum(2, keepdim=True))[..., 0]
    cols = (e @ w.sum(1)[:, :, None])[..., 0]  # what the session adds to C's column of x_j
    return {"cooc": (pairs.double().numpy(), rows.double().numpy()),
            "cooc_any": ((pairs + pairs.transpose(1, 2)).double().numpy(), (rows + cols).double().numpy())}


def _transition_counts(data: SessionData, count_rows: np.ndarray,
                       row_start: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(within-session, session -> next session) transition counts over ``count_rows``, (N+1, N+1) CSR.

    Within: consecutive events of a session, and the last event of a chunk into its continuation
    chunk (one real session). Between: last item of a session -> first item of the user's next
    (non-continuation) session, both counted only when the later session is a count row.
    """
    n = data.n_items + 1
    lengths = data.lengths.numpy()
    items = data.items.numpy()
    users = data.users.numpy()
    cont = data.is_continuation.numpy()
    src, dst = [], []
    # within sessions
    for p in range(1, data.max_len):
        sel = count_rows & (lengths > p)
        src.append(items[sel, p - 1])
        dst.append(items[sel, p])
    # chunk -> continuation chunk, and session -> next session
    prev = np.arange(1, data.n_sessions) - 1
    nxt = prev + 1
    same = (users[nxt] == users[prev]) & count_rows[nxt]
    last_prev = items[prev, lengths[prev] - 1]
    first_next = items[nxt, 0]
    c = same & cont[nxt]
    src.append(last_prev[c])
    dst.append(first_next[c])
    within = sp.coo_matrix((np.ones(sum(len(s) for s in src)), (np.concatenate(src), np.concatenate(dst))),
                           shape=(n, n)).tocsr()
    b = same & ~cont[nxt]
    between = sp.coo_matrix((np.ones(int(b.sum())), (last_prev[b], first_next[b])), shape=(n, n)).tocsr()
    return within, between
