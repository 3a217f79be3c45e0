"""Next-item baselines: most-popular and first-order item transitions (Markov-1).

Both rank the full catalogue (items 1..N, padding never a candidate) with ties against the model,
exactly like the neural models: the scores are exact integers, ranked as ``thrnn.metrics.ranks_from_scores``
ranks them (Markov-1 without the dense scores: :func:`markov_ranks`).

Markov-1 choices (documented because they change the figures):
- transitions are counted on training data only (no online update with test events), within sessions,
  including the step from the last item of a chunk into its continuation chunk (consecutive events of
  one real session); the step from one session to the next is counted separately and used only for
  the first item of the next session;
- score(i | prev) = count(prev -> i) · (max_popularity + 1) + popularity(i): transitions first, ties
  (including prev never seen, or 0 transitions) broken by training popularity, remaining ties
  counted against the model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from contract import columns as C
from thrnn.baselines.protocol import session_table
from thrnn.io import Split

# Targets ranked at once (bounds their rows of transitions).
_TARGET_BLOCK = 1 << 16


def item_popularity(split: Split) -> np.ndarray:
    """(N+1,) training counts per item id; index 0 (padding) is 0."""
    return np.bincount(split.train[C.ITEM_ID].to_numpy(np.int64), minlength=split.n_items + 1)[: split.n_items + 1]


def popularity_ranks(popularity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each target among items 1..N scored by ``popularity``; ties against the model.

    rank = 1 + #higher + #other equal = N - #items strictly lower.
    """
    cand = np.sort(popularity[1:])
    return (len(cand) - np.searchsorted(cand, popularity[targets], side="left")).astype(np.int64)


def transition_matrix(split: Split) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(within-session, session-to-next-session) transition counts from train, both (N+1, N+1) CSR."""
    n = split.n_items + 1
    tr = split.train
    items = tr[C.ITEM_ID].to_numpy(np.int64)
    user = tr[C.USER_ID].to_numpy()
    sidx = tr[C.SESSION_INDEX].to_numpy()
    pos = tr[C.POSITION].to_numpy()
    cont = tr[C.IS_CONTINUATION].to_numpy(bool)
    same_user = np.zeros(len(tr), dtype=bool)
    same_user[1:] = user[1:] == user[:-1]
    within = np.zeros(len(tr), dtype=bool)
    within[1:] = same_user[1:] & (
        ((sidx[1:] == sidx[:-1]) & (pos[1:] > 0)) | ((sidx[1:] == sidx[:-1] + 1) & (pos[1:] == 0) & cont[1:])
    )
    idx = np.flatnonzero(within)
    inner = sp.coo_matrix((np.ones(len(idx)), (items[idx - 1], items[idx])), shape=(n, n)).tocsr()
    s = session_table(split)
    s = s[~s["is_test"] & ~s["is_continuation"] & (s["prev_last_item"] > 0)]
    between = sp.coo_matrix(
        (np.ones(len(s)), (s["prev_last_item"].to_numpy(np.int64), s["first_item"].to_numpy(np.int64))),
        shape=(n, n),
    ).tocsr()
    return inner, between


def markov_ranks(transitions: sp.csr_matrix, popularity: np.ndarray, prev: np.ndarray,
                 targets: np.ndarray) -> np.ndarray:
    """Ranks under score = count(prev -> i) · (max_pop + 1) + pop(i) (exact int64), ties against the model.

    Without a dense (targets x items) block: the rank is the number of items 1..N scoring at least the
    target, i.e. the items scoring on popularity alone at least that much (a search in the sorted
    popularities) corrected by the few items with transitions from ``prev`` (its row's entries), the
    same integers as :func:`thrnn.metrics.ranks_from_scores` of the dense scores.
    """
    n = transitions.shape[0]
    if len(prev) != len(targets):
        raise ValueError("prev and targets differ in length")
    prev, targets = np.asarray(prev, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    if len(targets) and int(targets.min()) < 1:
        raise ValueError("targets must be item ids >= 1 (0 is padding)")
    pop = np.asarray(popularity, dtype=np.int64)
    if len(pop) != n:
        raise ValueError(f"popularity has {len(pop)} entries, the transitions {n} rows")
    scale = int(pop.max()) + 1
    ranked = np.sort(pop[1:])
    out = []
    for s in range(0, len(prev), _TARGET_BLOCK):
        p, t = prev[s:s + _TARGET_BLOCK], targets[s:s + _TARGET_BLOCK]
        own = np.asarray(transitions[p, t]).ravel().astype(np.int64) * scale + pop[t]
        rows = transitions[p]
        r = np.repeat(np.arange(len(p)), np.diff(rows.indptr))
        cols, counts = rows.indices.astype(np.int64), rows.data.astype(np.int64)
        keep = cols > 0
        r, cols, counts = r[keep], cols[keep], counts[keep]
        # on popularity alone, then the row's items with their transitions instead
        rank = len(ranked) - np.searchsorted(ranked, own, side="left")
        rank += np.bincount(r, counts * scale + pop[cols] >= own[r], minlength=len(p)).astype(np.int64)
        rank -= np.bincount(r, pop[cols] >= own[r], minlength=len(p)).astype(np.int64)
        out.append(rank)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
