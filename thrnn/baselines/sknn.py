"""Session-kNN with the session-aware extensions (``sknn`` of :mod:`thrnn.baselines.session_aware`).

V-SkNN (Ludewig & Jannach) with *extend*, *boost* and *remind* as Latifi, Mauro & Jannach
("Session-aware recommendation: a surprising quest for the state of the art", Information Sciences
2021) describe them, following the structure of their public ``session-rec`` code (V-SkNN and its
user-aware variant):

- query: the current session's items so far; *extend*: when it has fewer than ``extend`` items, the
  user's events just before it are prepended up to ``extend`` items. For the first item of a session
  the current session is empty and the user's previous session is the query (then extended the same
  way).
- candidates: every past session sharing an item with the query — all training sessions, and test
  sessions that ended before the target (the target's own session never) — of which the
  ``sample_size`` (m) most recent by end time (then session id) are kept;
- similarity: query items weighted by position with a linear decay (1 for the latest, 0.1 less per
  step back, 0 from ten steps back), summed over the items shared with the candidate and divided by
  the query's number of distinct items; candidates with similarity 0 are dropped; *boost*: the
  similarity of the user's own sessions is multiplied by ``1 + boost``; the ``k`` most similar
  (ties: the more recent) are the neighbours;
- score(i) = Σ over neighbours containing i of similarity · 1 / step, where step is the position
  from the end of the query of the latest query item the neighbour shares (``session-rec``'s default
  ``div`` score weighting); ``exclude_query`` drops the query's own items (``session-rec``'s
  ``remind=False``; after sessionization the next item is never the current one);
- *remind*: ``knn / max(knn) + w_remind · 1 / (1 + age)`` over the items of the user's past sessions
  (the last ``remind_sessions`` of them; 0, the default, = all), age = events between the item's last
  occurrence there and the end of the past sessions (an event-count version of the code's recency
  reminder, which uses seconds).

Deviations from ``session-rec``, on purpose: the linear position weight is clipped at 0 (the
reference ``linear`` weighting turns negative, and is 0 for the latest items, in queries longer than
10); event counts replace wall-clock times in the reminder; a query keeps its last 50 events (the
sessionized splits hold at most 20, docs/design.md §3.1). Ties in the final score are broken by
training popularity like every baseline here. k, m, extend, boost, ``exclude_query`` and w_remind are
chosen on the validation split (next and first item separately, :func:`tune`, on at most
``TUNE_MAX_TARGETS`` evenly spaced targets).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from thrnn.baselines.session_aware import (
    TUNE_K,
    Blocks,
    Entries,
    EventLog,
    Task,
    best_grid_point,
    combine,
    grid_metrics,
    history,
    iter_tasks,
    union_entries,
)
from thrnn.io import Split

DEFAULT_SKNN: dict[str, Any] = {"k": 100, "sample_size": 500, "extend": 5, "boost": 0.5, "exclude_query": False,
                                "w_remind": 1.0, "remind_sessions": 0}
GRID: dict[str, Any] = {
    "k": (20, 50, 100),
    "sample_size": (500, 1000),
    "extend": (0, 5),
    "boost": (0.0, 3.0),
    "exclude_query": (False, True),
    "w_remind": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
    "remind_sessions": 0,  # one value (0 = all past sessions): it fixes the targets' reminder entries
}
TUNE_MAX_TARGETS = 4000
_PAIR_BLOCK = 1 << 21  # bound on candidate (target, session) pairs handled at once
_BASE = 1024.0  # query weights are integer tenths 0..10 packed as tenths + _BASE (see _candidates)
_MAX_QUERY = 50  # a query keeps its last 50 events: the packed sums of _candidates stay exact


@dataclass
class Sessions:
    """Every session of the log (train and test) as a binary incidence matrix, columns in end-time order."""

    m: sp.csr_matrix  # (S, N+1)
    mt: sp.csr_matrix  # (N+1, S)
    end_us: np.ndarray
    users: np.ndarray
    is_train: np.ndarray
    per_item: np.ndarray  # sessions holding each item

    @staticmethod
    def of(log: EventLog) -> Sessions:
        starts = np.flatnonzero(np.r_[True, log.sessions[1:] != log.sessions[:-1]])
        ends = np.r_[starts[1:], len(log.sessions)]
        end_us = log.times_us[ends - 1]
        order = np.lexsort((log.sessions[starts], end_us))  # by end time, then session id
        col_of = np.empty(len(starts), dtype=np.int64)
        col_of[order] = np.arange(len(starts))
        ev_col = np.repeat(col_of, ends - starts)
        m = sp.csr_matrix((np.ones(len(ev_col)), (ev_col, log.items)), shape=(len(starts), log.n_items + 1))
        m.data[:] = 1.0  # binary: an item repeated in a session counts once
        m.sort_indices()
        return Sessions(m, m.T.tocsr(), end_us[order], log.users[starts][order], ~log.is_test[starts][order],
                        np.diff(m.T.tocsr().indptr))


@dataclass
class Targets:
    """What the kNN needs per target: the query range [lo, hi) in the log (before extension), the user,
    the time before which test sessions are visible, and the reminder entries (past sessions)."""

    lo: np.ndarray
    hi: np.ndarray
    user_start: np.ndarray
    users: np.ndarray
    tau_us: np.ndarray
    remind: Entries

    @property
    def n(self) -> int:
        return len(self.lo)

    @staticmethod
    def of(log: EventLog, at: np.ndarray, users: np.ndarray, first: bool, tau_us: np.ndarray,
           remind_sessions: int) -> Targets:
        at = np.asarray(at, dtype=np.int64)
        users = np.asarray(users, dtype=np.int64)
        ustart = log.user_start(users)
        if first:  # the previous session is the query; the past sessions end right before the target
            hi = at.copy()
            lo = np.where(at > ustart, log.session_start(np.maximum(at - 1, 0)), at)
            k0 = at
        else:
            k0 = log.session_start(at)
            lo, hi = k0, at.copy()
        past = history(log, k0, users)
        rows = past.h_rows()
        rows, item, last = rows, past.h_item, past.h_last
        if remind_sessions > 0:  # reminders from the user's last remind_sessions sessions only
            starts = np.flatnonzero(np.r_[True, log.sessions[1:] != log.sessions[:-1]])
            back = starts[np.maximum(np.searchsorted(starts, k0) - remind_sessions, 0)]
            recent = last >= np.maximum(back, ustart)[rows]
            rows, item, last = rows[recent], item[recent], last[recent]
        rem = 1.0 / (k0[rows] - last).astype(np.float64)
        order = np.lexsort((item, rows))  # key order, so that unions merge sorted runs
        return Targets(lo, hi, ustart, users, np.asarray(tau_us, dtype=np.float64),
                       Entries(rows[order], item[order], [rem[order]]))

    def subset(self, idx: np.ndarray) -> Targets:
        """The targets ``idx`` (sorted), renumbered 0..len(idx)-1."""
        remap = np.full(self.n, -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        r = remap[self.remind.rows]
        ok = r >= 0
        return Targets(self.lo[idx], self.hi[idx], self.user_start[idx], self.users[idx], self.tau_us[idx],
                       Entries(r[ok], self.remind.items[ok], [self.remind.values[0][ok]]))

    def query_range(self, extend: int) -> tuple[np.ndarray, np.ndarray]:
        lo = self.lo
        if extend > 0:
            lo = np.where(self.hi - lo < extend, np.maximum(self.user_start, self.hi - extend), lo)
        return lo, self.hi


def protocol_targets(task: Task, remind_sessions: int | None = None) -> Targets:
    """kNN targets of a protocol task (next or first item)."""
    log, at = task.log, task.hist.at
    rs = int(DEFAULT_SKNN["remind_sessions"] if remind_sessions is None else remind_sessions)
    return Targets.of(log, at, task.hist.users, task.kind == "first", log.times_us[at].astype(np.float64), rs)


def _rows_of(ptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))


def _query(log: EventLog, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (row, item) of each query with the step of its latest occurrence (1 = the last item),
    and each row's number of distinct items."""
    lo = np.maximum(lo, hi - _MAX_QUERY)
    lengths = hi - lo
    rows = _rows_of(np.r_[0, np.cumsum(lengths)])
    idx = lo[rows] + np.arange(len(rows)) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    items = log.items[idx]
    step = hi[rows] - idx  # 1 for the latest query item
    n1 = log.n_items + 1
    key = rows * n1 + items
    order = np.lexsort((step, key))  # per key, the smallest step (latest occurrence) first
    key, step = key[order], step[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, step = key[first], step[first]
    r = key // n1
    n_distinct = np.bincount(r, minlength=len(lo))
    return r, key % n1, step, n_distinct


def _chunks(sess: Sessions, log: EventLog, lo: np.ndarray, hi: np.ndarray) -> Iterator[np.ndarray]:
    """Target index blocks whose candidate pairs (bounded by Σ sessions per query event) stay under
    ``_PAIR_BLOCK``."""
    cs = np.r_[0, np.cumsum(sess.per_item[log.items])]
    est = cs[hi] - cs[lo]
    start = 0
    acc = 0
    for t, e in enumerate(est.tolist()):
        if t > start and acc + e > _PAIR_BLOCK:
            yield np.arange(start, t)
            start, acc = t, 0
        acc += e
    if start < len(lo):
        yield np.arange(start, len(lo))


@dataclass
class _Candidates:
    """Candidate sessions of a block of targets (CSR rows in end-time order) with their similarity."""

    ptr: np.ndarray
    col: np.ndarray
    sim: np.ndarray
    decay: np.ndarray  # 1 / step of the latest query item the session shares ("div" score weighting)
    q_rows: np.ndarray
    q_items: np.ndarray
    n1: int


def _candidates(sess: Sessions, log: EventLog, lo: np.ndarray, hi: np.ndarray) -> _Candidates:
    r, items, step, n_distinct = _query(log, lo, hi)
    tenths = np.maximum(0, 11 - step).astype(np.float64)  # linear position weight in tenths: 10, 9, ..., 0
    # One complex product gives, per (target, candidate session), exactly:
    # real: Σ (_BASE + tenths) over shared items -> their count and weight sum (integers < 2**53);
    # imag: Σ 2**-step over shared items; the steps are distinct, so its leading bit is the smallest step.
    q = sp.csr_matrix((tenths + _BASE + 1j * np.ldexp(1.0, -step), (r, items)), shape=(len(lo), log.n_items + 1))
    p = (q @ sess.mt).tocsr()
    p.sort_indices()
    n_shared = np.floor(p.data.real / _BASE)
    sim10 = p.data.real - n_shared * _BASE
    min_step = 1 - np.frexp(p.data.imag)[1]
    rows = _rows_of(p.indptr)
    return _Candidates(p.indptr, p.indices.astype(np.int64), sim10 / (10.0 * n_distinct[rows]),
                       1.0 / min_step, r, items, log.n_items + 1)


def _sample(c: _Candidates, sess: Sessions, tg: Targets, block: np.ndarray, m: int) -> np.ndarray:
    """Mask of the kept candidates: visible, among the m most recent visible ones, similarity > 0."""
    rows = _rows_of(c.ptr)
    valid = sess.is_train[c.col] | (sess.end_us[c.col] < tg.tau_us[block][rows])
    cs = np.cumsum(valid)
    row_last = cs[np.maximum(c.ptr[1:] - 1, 0)] * (c.ptr[1:] > c.ptr[:-1])
    after = row_last[rows] - cs  # visible candidates more recent than this one
    return valid & (after < m) & (c.sim > 0)


def _rank_in_row(rows: np.ndarray, sim: np.ndarray, n_rows: int, k_max: int) -> np.ndarray:
    """0-based rank of each entry within its row by ``sim`` (> 0) descending, ties: the more recent first
    (entries come in (row, recency) order); exact for ranks < ``k_max``, larger ranks are >= ``k_max``.

    Only entries that can be among a row's ``k_max`` best are sorted: sims are bucketed (256 buckets
    of [0, row max], a monotone map) and a row keeps the buckets from the highest down to the first
    one that brings it to ``k_max`` entries, which holds every entry tied with or above the k-th.
    """
    rank = np.full(len(rows), np.iinfo(np.int64).max // 2, dtype=np.int64)
    if not len(rows):
        return rank
    ptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n_rows))]
    nz = np.flatnonzero(ptr[1:] > ptr[:-1])
    top = np.ones(n_rows)
    top[nz] = np.maximum.reduceat(sim, ptr[:-1][nz])
    q = np.minimum((sim / top[rows] * 255).astype(np.int64), 255)
    hist = np.bincount(rows * 256 + q, minlength=n_rows * 256).reshape(n_rows, 256)
    enough = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1] >= k_max  # entries with bucket >= b reach k_max
    cut = np.where(enough.any(axis=1), 255 - np.argmax(enough[:, ::-1], axis=1), 0)
    surv = np.flatnonzero(q >= cut[rows])
    order = surv[np.lexsort((-surv, -sim[surv], rows[surv]))]
    start = np.searchsorted(rows[order], rows[order], side="left")
    rank[order] = np.arange(len(order)) - start
    return rank


def _knn_scores(c: _Candidates, sess: Sessions, tg: Targets, block: np.ndarray, keep: np.ndarray,
                boost: float, ks: Sequence[int]) -> dict[int, Entries]:
    """kNN scores for each k as entries over the block's rows, two components each normalised to max 1
    per target: all items, and without the query's own items (``session-rec``'s ``remind=False``)."""
    rows = _rows_of(c.ptr)[keep]
    col = c.col[keep]
    sim = c.sim[keep]
    own = sess.users[col] == tg.users[block][rows]
    sim = np.where(own, sim + sim * boost, sim)
    n_rows = len(block)
    decay = c.decay[keep]
    qkey = c.q_rows * c.n1 + c.q_items
    rank = _rank_in_row(rows, sim, n_rows, max(int(k) for k in ks))
    out = {}
    for k in ks:
        sel = rank < int(k)
        r, s = rows[sel], col[sel]
        wmat = sp.csr_matrix((sim[sel] * decay[sel], (r, s)), shape=(n_rows, sess.m.shape[0]))
        sc = (wmat @ sess.m).tocsr()
        sc.sort_indices()
        sr = _rows_of(sc.indptr)
        si = sc.indices.astype(np.int64)
        key = sr * c.n1 + si
        pos = np.minimum(np.searchsorted(qkey, key), max(len(qkey) - 1, 0))
        in_query = (qkey[pos] == key) if len(qkey) else np.zeros(len(key), dtype=bool)
        out[int(k)] = Entries(sr, si, [_row_max_normalised(sc.indptr, sr, sc.data),
                                       _row_max_normalised(sc.indptr, sr, np.where(in_query, 0.0, sc.data))])
    return out


def _row_max_normalised(ptr: np.ndarray, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``v`` divided by its row's maximum (rows given as CSR ``ptr``; all-zero rows stay 0)."""
    nz = np.diff(ptr) > 0
    top = np.ones(len(ptr) - 1)
    if len(v):
        top[nz] = np.maximum.reduceat(v, ptr[:-1][nz])
    return v / np.where(top > 0, top, 1.0)[rows]


def _block_entries(tg: Targets, block: np.ndarray, knn: Entries, n_items: int) -> Entries:
    """Components (knn, knn without query items, reminder) of a block of targets on their union."""
    rm = tg.remind
    a, b = np.searchsorted(rm.rows, [block[0], block[-1] + 1])
    e = union_entries(n_items, [(knn.rows, knn.items, knn.values[0]),
                                (rm.rows[a:b] - block[0], rm.items[a:b], rm.values[0][a:b])])
    n1 = n_items + 1
    excl = np.zeros(len(e.rows))
    excl[np.searchsorted(e.rows * n1 + e.items, knn.rows * n1 + knn.items)] = knn.values[1]
    return Entries(e.rows, e.items, [e.values[0], excl, e.values[1]])


def weights(params: dict[str, Any]) -> list[float]:
    """Weights of the (knn, knn without query items, reminder) components for ``params``."""
    p = {**DEFAULT_SKNN, **params}
    excl = bool(p["exclude_query"])
    return [0.0 if excl else 1.0, 1.0 if excl else 0.0, float(p["w_remind"])]


def _checked(params: dict[str, Any]) -> dict[str, Any]:
    p = {**DEFAULT_SKNN, **params}
    unknown = set(p) - set(DEFAULT_SKNN)
    if unknown:
        raise ValueError(f"unknown sknn parameters {sorted(unknown)}")
    if int(p["k"]) < 1 or int(p["sample_size"]) < 1:
        raise ValueError(f"k and sample_size must be >= 1, got {p['k']}, {p['sample_size']}")
    if int(p["extend"]) < 0 or float(p["boost"]) < 0 or float(p["w_remind"]) < 0 or int(p["remind_sessions"]) < 0:
        raise ValueError("extend, boost, w_remind and remind_sessions must be >= 0")
    return p


def scores(log: EventLog, tg: Targets, params: dict[str, Any], sess: Sessions | None = None) -> Entries:
    """Components of every target for one parameter set, as entries (rows = targets; see :func:`weights`)."""
    sess = sess or Sessions.of(log)
    p = _checked(params)
    lo, hi = tg.query_range(int(p["extend"]))
    parts: list[Entries] = []
    for block in _chunks(sess, log, lo, hi):
        c = _candidates(sess, log, lo[block], hi[block])
        keep = _sample(c, sess, tg, block, int(p["sample_size"]))
        knn = _knn_scores(c, sess, tg, block, keep, float(p["boost"]), [int(p["k"])])[int(p["k"])]
        e = _block_entries(tg, block, knn, log.n_items)
        parts.append(Entries(e.rows + block[0], e.items, e.values))
    if not parts:
        return Entries(np.zeros(0, np.int64), np.zeros(0, np.int64), [np.zeros(0)] * 3)
    return Entries(np.concatenate([e.rows for e in parts]), np.concatenate([e.items for e in parts]),
                   [np.concatenate([e.values[j] for e in parts]) for j in range(3)])


def score_of(entries: Entries, params: dict[str, Any]) -> np.ndarray:
    return combine(entries.values, weights(params))


def ranks(task: Task, params: dict[str, Any], tg: Targets | None = None, sess: Sessions | None = None) -> np.ndarray:
    """Ranks of the protocol's targets of ``task`` under one parameter set."""
    tg = tg or protocol_targets(task, int({**DEFAULT_SKNN, **params}["remind_sessions"]))
    e = scores(task.log, tg, params, sess)
    return task.ranks(e, score_of(e, params))


def tune(tasks: Task | Blocks, grid: dict[str, Any] | None = None, k_metric: int = TUNE_K,
         max_targets: int | None = TUNE_MAX_TARGETS) -> tuple[dict[str, Any], dict[str, float]]:
    """Best parameters on ``tasks`` (validation targets) by Recall@k, then MRR@k, then the first in
    grid order, over the product ``grid``.

    The candidates are computed once per ``extend`` and block of targets; sampling, boost, k and the
    reminder weight reuse them. With more than ``max_targets`` targets an evenly spaced subset of about
    that size is used (it keeps tuning time bounded; None = all). Returns (params, {"recall@k",
    "mrr@k"} of the chosen point on the targets used).
    """
    g = {**GRID, **(grid or {})}
    w_points = list(itertools.product(g["exclude_query"], g["w_remind"]))
    w_grid = np.array([[1.0, float(w)] for w in g["w_remind"]])
    configs = list(itertools.product(g["extend"], g["sample_size"], g["boost"], g["k"]))
    hits = np.zeros((len(configs), len(w_points)), dtype=np.int64)
    rr = np.zeros((len(configs), len(w_points)))
    share = 1.0 if max_targets is None or tasks.n <= max_targets else max_targets / tasks.n
    sess: Sessions | None = None
    n_used = 0
    for task in iter_tasks(tasks):
        sess = sess or Sessions.of(task.log)
        tg = protocol_targets(task, int(g["remind_sessions"]))
        targets = task.targets
        if share < 1 and tg.n:
            idx = np.unique(np.linspace(0, tg.n - 1, max(1, round(tg.n * share))).round().astype(np.int64))
            tg, targets = tg.subset(idx), targets[idx]
        n_used += tg.n
        for extend in g["extend"]:
            lo, hi = tg.query_range(int(extend))
            for block in _chunks(sess, task.log, lo, hi):
                c = _candidates(sess, task.log, lo[block], hi[block])
                for m in g["sample_size"]:
                    keep = _sample(c, sess, tg, block, int(m))
                    for boost in g["boost"]:
                        knn = _knn_scores(c, sess, tg, block, keep, float(boost), [int(k) for k in g["k"]])
                        for k in g["k"]:
                            e = _block_entries(tg, block, knn[int(k)], task.log.n_items)
                            i = configs.index((extend, m, boost, k))
                            for x, excl in enumerate(g["exclude_query"]):
                                # two components at a time prune better; the scores are the same floats
                                # as combine() of all three with the other kNN variant weighted 0
                                e2 = Entries(e.rows, e.items, [e.values[1 if excl else 0], e.values[2]])
                                h, r = grid_metrics(e2, targets[block], task.pop, w_grid, k_metric)
                                hits[i, x * len(w_grid):(x + 1) * len(w_grid)] += h
                                rr[i, x * len(w_grid):(x + 1) * len(w_grid)] += r
    flat = best_grid_point(hits.ravel(), rr.ravel())
    ci, wi = divmod(flat, len(w_points))
    extend, m, boost, k = configs[ci]
    params = {"k": int(k), "sample_size": int(m), "extend": int(extend), "boost": float(boost),
              "exclude_query": bool(w_points[wi][0]), "w_remind": float(w_points[wi][1]),
              "remind_sessions": int(g["remind_sessions"])}
    n = max(n_used, 1)
    return params, {f"recall@{k_metric}": float(hits.ravel()[flat] / n), f"mrr@{k_metric}": float(rr.ravel()[flat] / n)}


def next_session_scores(split: Split, task: Task, params: dict[str, Any] | None) -> tuple[Entries, np.ndarray]:
    """First-item scores for every user's next, not yet seen session (``task`` from
    ``session_aware.next_session_task``): the query is the user's last session, every session is visible."""
    p = params or {}
    tg = Targets.of(task.log, task.hist.at, task.hist.users, True, np.full(task.n, np.inf),
                    int({**DEFAULT_SKNN, **p}["remind_sessions"]))
    e = scores(task.log, tg, p)
    return e, score_of(e, p)
