"""Session-aware (personal-history) baselines, on the evaluation protocol of ``thrnn.baselines.protocol``.

For a target (an event to predict) the user's *history* is every earlier event of that user in time
order: all training events, then the test sessions before the target's session, then the earlier
positions of the target's own session (as the neural models' session FIFO sees them). Nothing at or
after the target is used. ``cur`` is the last history event (the previous item for a next-item
target, the last item of the previous session for a first-item target). Global statistics
(popularity, Markov-1 transitions) come from the training split only, as in
:mod:`thrnn.baselines.ranking`.

Baselines (each for the next item and the first item of a session):

- ``repeat_last``: 1 for ``cur``, else 0;
- ``user_recency``: the history's items by how recently they occurred (most recent first);
- ``user_decay``: the user's decayed item frequency, ``decay ** age`` per history event (age 0 = the
  latest), normalised to sum 1 (``decay`` 0.97);
- ``user_markov1``: the user's own transition counts out of ``cur`` over consecutive history events
  (pairs may cross a session boundary), normalised;
- ``blend``: ``w_global · P_global(i | cur) + w_user · user_markov1 + w_decay · user_decay`` with the
  global within-session transitions for the next item and the session-to-session transitions for the
  first item (rows of ``ranking.transition_matrix``, normalised); weights (simplex grid, step 0.1)
  and decay chosen separately for the next and the first item by Recall@20 (then MRR@20) on a
  validation split carved from train (:func:`thrnn.baselines.protocol.validation_split`);
- ``sknn``: session-kNN with extend/boost/remind (:mod:`thrnn.baselines.sknn`).

Ranking: full ranking over items 1..N (padding never a candidate), lexicographically by (baseline
score, training popularity), remaining ties counted against the model — for every baseline. Items
seen only in test are ranked through the personal parts (their popularity is 0). Scores live in flat
sparse form (one entry per target and item with a non-zero component); the items without an entry
all score 0 and are counted in closed form, so nothing dense of size targets x items is built. The
per-user state is sparse too (distinct items seen, last occurrences, transition counts), and targets
are handled in blocks of users (:class:`Blocks`) so that memory stays bounded on any split.

Validation: :func:`evaluate` carves :func:`thrnn.baselines.protocol.validation_split` out of train with
``validation_sessions`` per user (default: the mean number of test sessions per user, so validation
is about the size of test), tunes there, and records the choice (``params``) and every baseline's
validation figures. :func:`next_session_lists` ranks the first item of every user's next session.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from contract import columns as C
from thrnn.baselines import ranking
from thrnn.io import Split

PERSONAL = ("repeat_last", "user_recency", "user_decay", "user_markov1")
SESSION_AWARE = (*PERSONAL, "blend", "sknn")
# baselines whose lists a night can publish (``next_session_lists``)
LISTABLE = ("most_popular", "markov1", *SESSION_AWARE)
KINDS = ("next", "first")
DEFAULT_DECAY = 0.97
BLEND_DECAYS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.97, 0.99)
BLEND_KEYS = ("w_global", "w_user", "w_decay")
# The colleague-measured starting point; the first item starts from the decayed frequency alone.
DEFAULT_BLEND: dict[str, dict[str, float]] = {
    "next": {"w_global": 0.3, "w_user": 0.4, "w_decay": 0.3, "decay": 0.97},
    "first": {"w_global": 0.0, "w_user": 0.0, "w_decay": 1.0, "decay": 0.97},
}
TUNE_K = 20  # tuning criterion: Recall@20, then MRR@20
_HISTORY_BLOCK = 1 << 22  # bound on the history entries (target x distinct item) of one block of targets


# ------------------------------------------------------------------------------ event log and history


@dataclass
class EventLog:
    """Train and test events of a split in one array per column, in (user, session_index, position) order."""

    n_items: int
    items: np.ndarray
    users: np.ndarray
    sessions: np.ndarray
    times_us: np.ndarray
    positions: np.ndarray
    is_test: np.ndarray
    is_continuation: np.ndarray
    bounds: dict[int, tuple[int, int]]  # user -> [start, end) in the arrays

    def targets(self, kind: str) -> np.ndarray:
        """Indices of the protocol's targets: next item = test positions > 0; first item = position 0 of
        test sessions that are not continuations (``thrnn.baselines.protocol.targets_from_split`` order)."""
        if kind == "next":
            return np.flatnonzero(self.is_test & (self.positions > 0))
        if kind == "first":
            return np.flatnonzero(self.is_test & (self.positions == 0) & ~self.is_continuation)
        raise ValueError(f"kind must be 'next' or 'first', got {kind!r}")

    def user_start(self, users: np.ndarray) -> np.ndarray:
        """Index of each user's first event (0 for users without events)."""
        starts = np.zeros(max(self.bounds, default=-1) + 2, dtype=np.int64)
        for u, (a, _) in self.bounds.items():
            starts[u] = a
        return starts[np.minimum(np.asarray(users, dtype=np.int64), len(starts) - 1)]

    def session_start(self, at: np.ndarray) -> np.ndarray:
        """Index of the first event of the session (chunk) each event belongs to."""
        starts = np.flatnonzero(np.r_[True, self.sessions[1:] != self.sessions[:-1]])
        return starts[np.searchsorted(starts, at, side="right") - 1]


def event_log(split: Split) -> EventLog:
    """Both parts of ``split`` as one time-ordered log (train sessions precede test sessions per user)."""
    cols = [C.USER_ID, C.SESSION_ID, C.SESSION_INDEX, C.POSITION, C.ITEM_ID, C.EVENT_TIME, C.IS_CONTINUATION]
    ev = pd.concat([split.train[cols].assign(_test=False), split.test[cols].assign(_test=True)],
                   ignore_index=True).sort_values([C.USER_ID, C.SESSION_INDEX, C.POSITION], kind="stable")
    users = ev[C.USER_ID].to_numpy(np.int64)
    edges = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    bounds = {int(users[a]): (int(a), int(b)) for a, b in itertools.pairwise(edges)}
    times = (pd.to_datetime(ev[C.EVENT_TIME], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    return EventLog(split.n_items, ev[C.ITEM_ID].to_numpy(np.int64), users, ev[C.SESSION_ID].to_numpy(np.int64),
                    times.to_numpy(np.int64), ev[C.POSITION].to_numpy(np.int64), ev["_test"].to_numpy(bool),
                    ev[C.IS_CONTINUATION].to_numpy(bool), bounds)


@dataclass
class History:
    """Per-target history state, flat over targets (CSR-like ``*_ptr`` arrays of length T+1).

    ``at[t]``: the target's index in the log (its history is the user's events before it; one past the
    user's last event for a not yet seen session); ``cur``: last history item (0 without history);
    ``h_*``: the history's distinct items and the log index of their last occurrence; ``u_*``: the
    user's transition counts out of ``cur`` within the history.
    """

    at: np.ndarray
    users: np.ndarray
    cur: np.ndarray
    h_ptr: np.ndarray
    h_item: np.ndarray
    h_last: np.ndarray
    u_ptr: np.ndarray
    u_item: np.ndarray
    u_count: np.ndarray

    @property
    def n(self) -> int:
        return len(self.at)

    def h_rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), np.diff(self.h_ptr))

    def u_rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), np.diff(self.u_ptr))


def history(log: EventLog, at: np.ndarray, users: np.ndarray) -> History:
    """History state of each target ``at[t]`` of user ``users[t]`` (sorted by index; one pass per user).

    Per user the state is sparse: the distinct items seen so far (in order of first appearance) with
    their last occurrence, and a dict of transition counts; each target copies the part it needs.
    """
    at = np.asarray(at, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if len(at) > 1 and np.any(np.diff(at) < 0):
        raise ValueError("targets must be sorted by log index")
    n = len(at)
    cur = np.zeros(n, dtype=np.int64)
    h_items: list[np.ndarray] = []
    h_last: list[np.ndarray] = []
    u_items: list[np.ndarray] = []
    u_counts: list[np.ndarray] = []
    h_len = np.zeros(n, dtype=np.int64)
    u_len = np.zeros(n, dtype=np.int64)
    i = 0
    while i < n:
        u = int(users[i])
        j = i
        while j < n and users[j] == u:
            j += 1
        s, e = log.bounds.get(u, (0, 0))
        x = log.items[s:e]
        if np.any((at[i:j] < s) | (at[i:j] > e)):
            raise ValueError(f"a target of user {u} lies outside the user's events")
        uniq, first_idx, inv = np.unique(x, return_index=True, return_inverse=True)
        order = np.argsort(first_idx, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        local = rank[inv].tolist()
        local_items = uniq[order]
        is_first = np.zeros(len(x), dtype=np.int64)
        is_first[first_idx] = 1
        n_seen = np.r_[0, np.cumsum(is_first)]
        last = np.full(len(uniq), -1, dtype=np.int64)
        xs = x.tolist()
        trans: dict[int, dict[int, int]] = {}
        m = 0
        for q in range(i, j):
            a = int(at[q]) - s
            while m < a:  # consume events up to (not including) the target
                last[local[m]] = s + m
                if m > 0:
                    row = trans.setdefault(xs[m - 1], {})
                    row[xs[m]] = row.get(xs[m], 0) + 1
                m += 1
            k = int(n_seen[a])
            h_items.append(local_items[:k])
            h_last.append(last[:k].copy())
            h_len[q] = k
            if a > 0:
                cur[q] = xs[a - 1]
                row = trans.get(xs[a - 1])
                if row:
                    u_items.append(np.fromiter(row.keys(), dtype=np.int64, count=len(row)))
                    u_counts.append(np.fromiter(row.values(), dtype=np.float64, count=len(row)))
                    u_len[q] = len(row)
        i = j

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return History(at, users, cur, np.r_[0, np.cumsum(h_len)], cat(h_items, np.int64), cat(h_last, np.int64),
                   np.r_[0, np.cumsum(u_len)], cat(u_items, np.int64), cat(u_counts, np.float64))


def decayed_counts(log: EventLog, decay: float) -> np.ndarray:
    """(E,) for each event: sum of ``decay ** (e - m)`` over the user's events m <= e of the same item.

    The decayed frequency of item i at a target with history ending at event e-1 is then
    ``acc[last(i)] · decay ** (e - 1 - last(i))``: exact, and no huge powers (``decay ** -e``) appear.
    """
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    order = np.lexsort((np.arange(len(log.items)), log.items, log.users))
    acc = np.zeros(len(order), dtype=np.float64)
    prev_u = prev_i = -1
    prev_e = 0
    a = 0.0
    for e, u, i in zip(order.tolist(), log.users[order].tolist(), log.items[order].tolist(), strict=True):
        a = a * decay ** (e - prev_e) + 1.0 if (u == prev_u and i == prev_i) else 1.0
        acc[e] = a
        prev_u, prev_i, prev_e = u, i, e
    return acc


# ---------------------------------------------------------------------------- flat scores and ranks


@dataclass
class Entries:
    """Flat sparse scores: ``rows`` (target index, sorted), ``items`` and one value array per component."""

    rows: np.ndarray
    items: np.ndarray
    values: list[np.ndarray]


def union_entries(n_items: int, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Entries:
    """Align (rows, items, values) parts on the union of their (row, item) pairs; missing values are 0.

    Each part must hold a (row, item) pair at most once.
    """
    n1 = n_items + 1
    keys = np.concatenate([np.asarray(r, dtype=np.int64) * n1 + np.asarray(i, dtype=np.int64) for r, i, _ in parts]) \
        if parts else np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")  # timsort: linear when the parts come already sorted
    sk = keys[order]
    new = np.r_[True, sk[1:] != sk[:-1]] if len(sk) else np.zeros(0, dtype=bool)
    slot = np.empty(len(keys), dtype=np.int64)
    slot[order] = np.cumsum(new) - 1  # each input pair's place in the union
    allk = sk[new]
    values = []
    start = 0
    for _, _, v in parts:
        out = np.zeros(len(allk), dtype=np.float64)
        out[slot[start:start + len(v)]] = v
        values.append(out)
        start += len(v)
    return Entries(allk // n1, allk % n1, values)


def combine(values: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``Σ w_k · v_k`` evaluated element by element in a fixed order.

    Tuning and evaluation both go through here, so a score is the same float whichever path made it.
    """
    s = values[0] * float(weights[0])
    for v, w in zip(values[1:], weights[1:], strict=True):
        s = s + v * float(w)
    return s


@dataclass
class _RankContext:
    """Per-target quantities of the closed-form rank that do not depend on the scores."""

    n_targets: int
    rows: np.ndarray
    target_entry: np.ndarray  # index of the target's own entry, -1 when it has none
    pop_ge: np.ndarray  # per entry: another item with popularity >= the target's (wins a score tie)
    outside_ge: np.ndarray  # per target: items without an entry (score 0) that win a tie at score 0


def _rank_context(entries: Entries, targets: np.ndarray, pop: np.ndarray) -> _RankContext:
    n_targets = len(targets)
    rows, items = entries.rows, entries.items
    if len(items) and (items.min() < 1 or items.max() >= len(pop)):
        raise ValueError("entries must be real item ids 1..N (padding is never a candidate)")
    pop_t = pop[targets]
    is_target = items == targets[rows]
    te = np.full(n_targets, -1, dtype=np.int64)
    te[rows[is_target]] = np.flatnonzero(is_target)
    pop_ge = ~is_target & (pop[items] >= pop_t[rows])
    cand = np.sort(pop[1:])
    all_ge = len(cand) - np.searchsorted(cand, pop_t, side="left") - 1  # minus the target itself
    outside_ge = all_ge - np.bincount(rows, weights=pop_ge, minlength=n_targets).astype(np.int64)
    return _RankContext(n_targets, rows, te, pop_ge, outside_ge)


def _target_scores(ctx: _RankContext, score: np.ndarray) -> np.ndarray:
    return np.where(ctx.target_entry >= 0, score[np.maximum(ctx.target_entry, 0)], 0.0) if len(score) else \
        np.zeros(ctx.n_targets)


def lex_ranks(entries: Entries, score: np.ndarray, targets: np.ndarray, pop: np.ndarray,
              ctx: _RankContext | None = None) -> np.ndarray:
    """Rank of each target among items 1..N by (score, popularity), remaining ties against the model.

    ``score`` (>= 0) is given per entry; items without an entry score 0. rank = 1 + #items beating the
    target, where i beats t when s_i > s_t, or s_i = s_t and pop_i >= pop_t (i != t).
    """
    ctx = ctx or _rank_context(entries, targets, pop)
    if len(score) and score.min() < 0:
        raise ValueError("scores must be >= 0")
    st = _target_scores(ctx, score)
    st_r = st[ctx.rows]
    beats = (score > st_r) | ((score == st_r) & ctx.pop_ge)
    count = np.bincount(ctx.rows, weights=beats, minlength=ctx.n_targets).astype(np.int64)
    return 1 + count + np.where(st == 0, ctx.outside_ge, 0)


def grid_metrics(entries: Entries, targets: np.ndarray, pop: np.ndarray, grid: np.ndarray,
                 k: int = TUNE_K) -> tuple[np.ndarray, np.ndarray]:
    """(hits@k, reciprocal-rank sum@k) of ``combine(entries.values, w)`` for every weight row w of ``grid``.

    Equal to evaluating each grid point with :func:`lex_ranks`, but entries that cannot change a rank
    within k are dropped first: with non-negative weights an entry whose components are all <= the
    target's never beats it unless it wins the popularity tie, and one whose components are all >= the
    target's and wins the tie always beats it (rounding is monotone, so this holds in floats too);
    targets beaten always by >= k entries are misses at every grid point.
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[1] != len(entries.values) or (grid < 0).any():
        raise ValueError("grid must be (G, components) non-negative weights")
    ctx = _rank_context(entries, targets, pop)
    rows = ctx.rows
    ct = [_target_scores(ctx, v) for v in entries.values]
    le = np.ones(len(rows), dtype=bool)
    ge = np.ones(len(rows), dtype=bool)
    for v, c in zip(entries.values, ct, strict=True):
        le &= v <= c[rows]
        ge &= v >= c[rows]
    never = le & ~ctx.pop_ge
    always = ge & ctx.pop_ge
    n_always = np.bincount(rows, weights=always, minlength=ctx.n_targets).astype(np.int64)
    live_t = np.flatnonzero(n_always < k)
    keep = ~never & ~always & np.isin(rows, live_t)
    remap = np.full(ctx.n_targets, -1, dtype=np.int64)
    remap[live_t] = np.arange(len(live_t))
    r = remap[rows[keep]]
    vals = [v[keep] for v in entries.values]
    pop_ge = ctx.pop_ge[keep]
    ct_live = [c[live_t] for c in ct]
    base = 1 + n_always[live_t]
    outside = ctx.outside_ge[live_t]
    hits = np.zeros(len(grid), dtype=np.int64)
    rr = np.zeros(len(grid), dtype=np.float64)
    for g, w in enumerate(grid):
        s = combine(vals, w) if len(r) else np.zeros(0)
        st = combine(ct_live, w)
        st_r = st[r]
        beats = (s > st_r) | ((s == st_r) & pop_ge)
        rank = base + np.bincount(r, weights=beats, minlength=len(live_t)).astype(np.int64)
        rank += np.where(st == 0, outside, 0)
        hit = rank <= k
        hits[g] = int(hit.sum())
        rr[g] = float(np.sum(1.0 / rank[hit]))
    return hits, rr


def best_grid_point(hits: np.ndarray, rr: np.ndarray) -> int:
    """Index of the best grid point: most hits (Recall@k), then largest MRR@k, then the first."""
    best = 0
    for g in range(1, len(hits)):
        if hits[g] > hits[best] or (hits[g] == hits[best] and rr[g] > rr[best]):
            best = g
    return best


def simplex_grid(n_components: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors with entries in {0, step, 2 step, ..., 1} summing to 1, as exact ratios i / n."""
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1, got {step}")
    pts = [c for c in itertools.product(range(n + 1), repeat=n_components) if sum(c) == n]
    return np.array([[i / n for i in c] for c in pts], dtype=np.float64)


# ------------------------------------------------------------------------------------ the baselines


@dataclass
class Task:
    """One kind of target (next or first item) on one split, with everything its baselines share."""

    kind: str
    log: EventLog
    hist: History
    targets: np.ndarray  # true items
    pop: np.ndarray
    transitions: sp.csr_matrix  # global within-session (next) or session-to-session (first) counts
    _acc: dict[float, np.ndarray] = field(default_factory=dict)  # per decay; shared by a split's blocks
    _blend: tuple[Entries, np.ndarray] | None = None

    @property
    def n(self) -> int:
        return self.hist.n

    def decayed(self, decay: float) -> np.ndarray:
        """Decayed frequency of each history entry (``hist.h_*``), normalised to sum 1 per target."""
        if decay not in self._acc:
            self._acc[decay] = decayed_counts(self.log, decay)
        h = self.hist
        rows = h.h_rows()
        age = h.at[rows] - 1 - h.h_last
        d = self._acc[decay][h.h_last] * np.power(decay, age.astype(np.float64))
        total = np.bincount(rows, weights=d, minlength=h.n)
        return d / np.where(total > 0, total, 1.0)[rows]

    def user_transition_probs(self) -> np.ndarray:
        h = self.hist
        rows = h.u_rows()
        total = np.bincount(rows, weights=h.u_count, minlength=h.n)
        return h.u_count / np.where(total > 0, total, 1.0)[rows]

    def global_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row-normalised global transitions out of ``cur`` for each target, as (rows, items, P)."""
        tr = self.transitions
        totals = np.asarray(tr.sum(axis=1)).ravel()
        norm = sp.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ tr
        g = sp.csr_matrix(norm)[self.hist.cur].tocoo()
        return g.row.astype(np.int64), g.col.astype(np.int64), g.data.astype(np.float64)

    # single-score baselines: (entries, score)
    def personal_entries(self, name: str, decay: float = DEFAULT_DECAY) -> tuple[Entries, np.ndarray]:
        h = self.hist
        if name == "repeat_last":
            t = np.flatnonzero(h.cur > 0)
            e = Entries(t, h.cur[t], [np.ones(len(t))])
        elif name == "user_recency":
            # 1 / (1 + events since the item's last occurrence): distinct per item, the latest scores 1
            rows = h.h_rows()
            e = Entries(rows, h.h_item, [1.0 / (h.at[rows] - h.h_last).astype(np.float64)])
        elif name == "user_decay":
            e = Entries(h.h_rows(), h.h_item, [self.decayed(decay)])
        elif name == "user_markov1":
            e = Entries(h.u_rows(), h.u_item, [self.user_transition_probs()])
        else:
            raise ValueError(f"unknown personal baseline {name!r}")
        return e, e.values[0]

    def blend_entries(self, decay: float) -> Entries:
        """Components (global, user, decay) on the union of their supports (the union is cached)."""
        h = self.hist
        if self._blend is None:
            rows = h.h_rows()
            e = union_entries(self.log.n_items, [self.global_rows(),
                                                 (h.u_rows(), h.u_item, self.user_transition_probs()),
                                                 (rows, h.h_item, np.zeros(len(rows)))])
            n1 = self.log.n_items + 1
            place = np.searchsorted(e.rows * n1 + e.items, rows * n1 + h.h_item)
            self._blend = (e, place)
        e, place = self._blend
        d = np.zeros(len(e.rows))
        d[place] = self.decayed(decay)
        return Entries(e.rows, e.items, [e.values[0], e.values[1], d])

    def ranks(self, entries: Entries, score: np.ndarray) -> np.ndarray:
        return lex_ranks(entries, score, self.targets, self.pop)


def make_task(split: Split, kind: str, log: EventLog | None = None) -> Task:
    """The protocol's targets of ``kind`` on ``split`` with their histories, as one block."""
    return next(iter(Blocks(split, kind, log, budget=None)))


class Blocks:
    """The protocol's targets of ``kind`` on ``split`` as tasks over consecutive users whose history
    entries (target x distinct item) stay under ``budget`` each; iterating builds them one at a time,
    so memory stays bounded on any split (a single block is built once and kept)."""

    def __init__(self, split: Split, kind: str, log: EventLog | None = None,
                 budget: int | None = _HISTORY_BLOCK) -> None:
        self.kind = kind
        self.log = log or event_log(split)
        self.at = self.log.targets(kind)
        self.users = self.log.users[self.at]
        inner, between = ranking.transition_matrix(split)
        self.transitions = inner if kind == "next" else between
        self.pop = ranking.item_popularity(split)
        self._acc: dict[float, np.ndarray] = {}
        self.slices = [slice(0, len(self.at))]
        if budget is not None and len(self.at):
            # a target holds at most min(earlier events of its user, the user's distinct items) entries
            distinct = pd.Series(self.log.items).groupby(self.log.users).nunique()
            est = np.minimum(self.at - self.log.user_start(self.users), distinct.reindex(self.users).to_numpy())
            cuts = [0]
            acc = 0
            user_edges = set(np.flatnonzero(np.r_[True, self.users[1:] != self.users[:-1]]).tolist())
            for t, e in enumerate(est.tolist()):
                if acc + e > budget and t in user_edges and t > cuts[-1]:
                    cuts.append(t)
                    acc = 0
                acc += e
            self.slices = [slice(a, b) for a, b in itertools.pairwise([*cuts, len(self.at)])]
        self._single: Task | None = None

    @property
    def n(self) -> int:
        return len(self.at)

    @property
    def targets(self) -> np.ndarray:
        return self.log.items[self.at]

    def _task(self, sl: slice) -> Task:
        at = self.at[sl]
        return Task(self.kind, self.log, history(self.log, at, self.users[sl]), self.log.items[at], self.pop,
                    self.transitions, self._acc)

    def __iter__(self) -> Iterator[Task]:
        if len(self.slices) == 1:
            if self._single is None:
                self._single = self._task(self.slices[0])
            yield self._single
            return
        for sl in self.slices:
            yield self._task(sl)

    def ranks(self, fn: Callable[[Task], np.ndarray]) -> np.ndarray:
        """``fn``'s ranks of every block, concatenated in target order."""
        parts = [fn(t) for t in self]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def iter_tasks(tasks: Task | Blocks) -> Iterable[Task]:
    """The block tasks of ``tasks`` (a single task is its own block)."""
    return [tasks] if isinstance(tasks, Task) else tasks


def blend_params_vector(p: dict[str, float]) -> np.ndarray:
    return np.array([float(p[k]) for k in BLEND_KEYS])


def blend_ranks(task: Task, params: dict[str, float]) -> np.ndarray:
    e = task.blend_entries(float(params["decay"]))
    return task.ranks(e, combine(e.values, blend_params_vector(params)))


def tune_blend(tasks: Task | Blocks, decays: Sequence[float] = BLEND_DECAYS, step: float = 0.1, k: int = TUNE_K,
               grid: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Best (weights, decay) on ``tasks`` (validation targets) by Recall@k, then MRR@k, then the first
    in (decay, grid) order. The weights run over the simplex grid of ``step`` (or the rows of ``grid``).

    Returns (params, {"recall@k", "mrr@k"} of the chosen point).
    """
    grid = simplex_grid(3, step) if grid is None else np.asarray(grid, dtype=np.float64)
    hits = np.zeros((len(decays), len(grid)), dtype=np.int64)
    rr = np.zeros((len(decays), len(grid)))
    n = 0
    for task in iter_tasks(tasks):
        n += task.n
        for j, decay in enumerate(decays):
            h, r = grid_metrics(task.blend_entries(decay), task.targets, task.pop, grid, k)
            hits[j] += h
            rr[j] += r
        task._blend = None  # the union of a block is not needed again
    j, g = divmod(best_grid_point(hits.ravel(), rr.ravel()), len(grid))
    params = {**{key: float(w) for key, w in zip(BLEND_KEYS, grid[g], strict=True)}, "decay": float(decays[j])}
    n = max(n, 1)
    return params, {f"recall@{k}": float(hits[j, g] / n), f"mrr@{k}": float(rr[j, g] / n)}


def personal_ranks(task: Task, name: str, decay: float = DEFAULT_DECAY) -> np.ndarray:
    e, s = task.personal_entries(name, decay)
    return task.ranks(e, s)


# --------------------------------------------------------------------------- next-session lists


def top_k_lists(entries: Entries, score: np.ndarray, row_users: np.ndarray, pop: np.ndarray,
                top_k: int) -> pd.DataFrame:
    """Top ``top_k`` items per row by (score, popularity, lower item id first); padding never listed.

    Items without an entry score 0, so the ``top_k`` most popular items complete every row's candidates.
    """
    n_rows = len(row_users)
    n_items = len(pop) - 1
    k = min(top_k, n_items)
    popular = np.lexsort((np.arange(1, n_items + 1), -pop[1:]))[:k] + 1
    fill = union_entries(n_items, [(entries.rows, entries.items, score),
                                   (np.repeat(np.arange(n_rows), k), np.tile(popular, n_rows), np.zeros(n_rows * k))])
    rows, items, s = fill.rows, fill.items, fill.values[0] + fill.values[1]
    order = np.lexsort((items, -pop[items], -s, rows))
    rows, items, s = rows[order], items[order], s[order]
    start = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - start + 1
    keep = rank <= k
    return pd.DataFrame({
        C.USER_ID: row_users[rows[keep]].astype(np.int32),
        "rank": rank[keep].astype(np.int16),
        C.ITEM_ID: items[keep].astype(np.int32),
        "score": s[keep].astype(np.float32),
    })


def next_session_task(split: Split) -> Task:
    """First-item task for every user's next, not yet seen session: the history is all of the user's events."""
    log = event_log(split)
    users = np.array(sorted(log.bounds), dtype=np.int64)
    at = np.array([log.bounds[int(u)][1] for u in users], dtype=np.int64)
    _, between = ranking.transition_matrix(split)
    # the true items are unknown: item 1 stands in (only the scores are used)
    return Task("first", log, history(log, at, users), np.ones(len(users), dtype=np.int64),
                ranking.item_popularity(split), between)


def next_session_lists(split: Split, name: str, top_k: int, params: dict | None = None) -> pd.DataFrame:
    """Baseline ``name``'s first-item ranking for every user's next, not yet seen session.

    ``name`` is one of :data:`LISTABLE`. The history is all of the user's events (train and test).
    ``params`` is the ``params`` dict the baseline's metrics recorded (the choice made on validation;
    None = defaults): for ``blend`` and ``sknn`` its ``first`` entry is used, for ``user_decay`` its
    ``decay``. ``markov1`` is the blend with all weight on the global session-to-session transitions
    (the order of ``ranking.markov_ranks`` on first items); ``most_popular`` the same training
    popularity list for every user. Columns ``user_id``, ``rank`` (1..K), ``item_id``, ``score``
    (int32, int16, int32, float32); ties in score are ordered by training popularity, then item id.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if name == "markov1":
        only_global = {"w_global": 1.0, "w_user": 0.0, "w_decay": 0.0, "decay": DEFAULT_DECAY}
        return next_session_lists(split, "blend", top_k, {"first": only_global})
    if name == "most_popular":
        return _popular_lists(split, top_k)
    task = next_session_task(split)
    params = params or {}
    if name in PERSONAL:
        e, s = task.personal_entries(name, float(params.get("decay", DEFAULT_DECAY)))
    elif name == "blend":
        p = {**DEFAULT_BLEND["first"], **params.get("first", {})}
        e = task.blend_entries(float(p["decay"]))
        s = combine(e.values, blend_params_vector(p))
    elif name == "sknn":
        from thrnn.baselines import sknn

        e, s = sknn.next_session_scores(split, task, params.get("first"))
    else:
        raise ValueError(f"baseline {name!r} has no next-session lists (one of {', '.join(LISTABLE)})")
    return top_k_lists(e, s, task.hist.users, task.pop, top_k)


def _popular_lists(split: Split, top_k: int) -> pd.DataFrame:
    """The training popularity ranking (then item id) for every user; score = share of training events."""
    pop = ranking.item_popularity(split)
    n_items = len(pop) - 1
    k = min(top_k, n_items)
    top = np.lexsort((np.arange(1, n_items + 1), -pop[1:]))[:k] + 1
    users = np.unique(np.concatenate([split.train[C.USER_ID].to_numpy(), split.test[C.USER_ID].to_numpy()]))
    return pd.DataFrame({
        C.USER_ID: np.repeat(users, k).astype(np.int32),
        "rank": np.tile(np.arange(1, k + 1), len(users)).astype(np.int16),
        C.ITEM_ID: np.tile(top, len(users)).astype(np.int32),
        "score": np.tile(pop[top] / max(int(pop.sum()), 1), len(users)).astype(np.float32),
    })


# ----------------------------------------------------------------------------------------- evaluation


def _figures(next_ranks: np.ndarray, first_ranks: np.ndarray, k: int = TUNE_K) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix, r in (("", next_ranks), ("first_item_", first_ranks)):
        hit = r <= k
        out[f"{prefix}recall@{k}"] = float(hit.mean()) if len(r) else 0.0
        out[f"{prefix}mrr@{k}"] = float(np.where(hit, 1.0 / np.maximum(r, 1), 0.0).mean()) if len(r) else 0.0
        out[f"{prefix}n_targets"] = int(len(r))
    return out


@dataclass
class Result:
    """Ranks of one session-aware baseline on the test targets, with what was chosen on validation."""

    next_ranks: np.ndarray
    first_ranks: np.ndarray
    seconds: float
    params: dict[str, Any]
    validation: dict[str, float]


def evaluate(split: Split, *, validation_sessions: int | None = None,
             names: Sequence[str] = SESSION_AWARE) -> dict[str, Result]:
    """Every session-aware baseline in ``names`` on the test targets of ``split``.

    ``blend`` and ``sknn`` are tuned on :func:`thrnn.baselines.protocol.validation_split` with
    ``validation_sessions`` per user (default: :func:`~thrnn.baselines.protocol.default_validation_sessions`);
    the validation figures (Recall@20, MRR@20, next and first item) of every baseline are recorded too.
    """
    import time

    from thrnn.baselines import sknn
    from thrnn.baselines.protocol import default_validation_sessions, targets_from_split, validation_split

    unknown = set(names) - set(SESSION_AWARE)
    if unknown:
        raise ValueError(f"unknown session-aware baselines {sorted(unknown)}")
    n_val = default_validation_sessions(split) if validation_sessions is None else int(validation_sessions)
    t0 = time.perf_counter()
    log = event_log(split)
    tasks = {k: Blocks(split, k, log) for k in KINDS}
    t = targets_from_split(split)
    if not (np.array_equal(tasks["next"].targets, t.next_items) and np.array_equal(tasks["first"].targets, t.first_items)
            and np.array_equal(tasks["next"].log.items[tasks["next"].at - 1], t.next_prev_items)):
        raise AssertionError("session-aware targets differ from the protocol's targets")
    val = validation_split(split, n_val)
    vlog = event_log(val)
    vtasks = {k: Blocks(val, k, vlog) for k in KINDS}
    shared = time.perf_counter() - t0
    out: dict[str, Result] = {}
    for name in names:
        t0 = time.perf_counter()
        params: dict[str, Any]
        if name in PERSONAL:
            params = {"decay": DEFAULT_DECAY} if name == "user_decay" else {}
            test = {k: tasks[k].ranks(lambda task, n=name: personal_ranks(task, n)) for k in KINDS}
            vfig = _figures(*(vtasks[k].ranks(lambda task, n=name: personal_ranks(task, n)) for k in KINDS))
        elif name == "blend":
            params = {k: tune_blend(vtasks[k])[0] for k in KINDS}
            test = {k: tasks[k].ranks(lambda task, p=params[k]: blend_ranks(task, p)) for k in KINDS}
            vfig = _figures(*(vtasks[k].ranks(lambda task, p=params[k]: blend_ranks(task, p)) for k in KINDS))
            fixed = _figures(*(vtasks[k].ranks(lambda task, p=DEFAULT_BLEND[k]: blend_ranks(task, p)) for k in KINDS))
            vfig.update({f"fixed_{key}": v for key, v in fixed.items() if "@" in key})
        else:
            params = {k: sknn.tune(vtasks[k])[0] for k in KINDS}
            test = {k: tasks[k].ranks(lambda task, p=params[k]: sknn.ranks(task, p)) for k in KINDS}
            vfig = _figures(*(vtasks[k].ranks(lambda task, p=params[k]: sknn.ranks(task, p)) for k in KINDS))
        vfig["validation_sessions"] = n_val
        out[name] = Result(test["next"], test["first"], time.perf_counter() - t0 + shared / len(names), params, vfig)
    return out


def baseline_recommendations(split: Any, name: str, top_k: int,
                             params: Mapping[str, Any] | None = None):  # noqa: ANN201 - DataFrame
    """Baseline ``name``'s next-session lists (``session_aware.next_session_lists``) keyed like the model's
    recommendations: user_key, rank, item_key, item_name, score."""
    lists = next_session_lists(split, name, top_k, dict(params) if params else None)
    recs = lists.merge(split.users[[C.USER_ID, C.USER_KEY]], on=C.USER_ID, how="left", validate="m:1").merge(
        split.items[[C.ITEM_ID, C.ITEM_KEY, C.ITEM_NAME]], on=C.ITEM_ID, how="left", validate="m:1")
    recs = recs.astype({"rank": "int64", "score": "float64"})
    return recs[[C.USER_KEY, "rank", C.ITEM_KEY, C.ITEM_NAME, "score"]].sort_values(
        [C.USER_KEY, "rank"]).reset_index(drop=True)
