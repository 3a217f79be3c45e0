"""The evaluation targets of docs/design.md §5 read straight from a split, for the non-neural baselines.

- next item: every test position but the first (positions 1..len-1 of each test session, continuation
  chunks included), with the previous item of the same session;
- first item: position 0 of each test session that is not a continuation, with the last item of the
  user's previous session (train or test);
- return time: every test session with a real gap (not a continuation, gap not null), in hours.

:func:`validation_split` carves a validation split out of the training sessions (for tuning baselines
without touching test).

All arrays are in (user, session_index, position) order, the order of ``thrnn.inference.predict_test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract import columns as C
from thrnn.io import Split


@dataclass
class Targets:
    """Per-target arrays (see the module docstring)."""

    n_items: int
    next_users: np.ndarray
    next_prev_items: np.ndarray
    next_items: np.ndarray
    first_users: np.ndarray
    first_prev_items: np.ndarray
    first_items: np.ndarray
    gap_users: np.ndarray
    gap_true_hours: np.ndarray


@dataclass
class BaselinePredictions:
    """Same field names as ``thrnn.inference.TestPredictions``, for ``metrics_from_predictions``."""

    next_item_ranks: np.ndarray | None
    first_item_ranks: np.ndarray | None
    gap_true_hours: np.ndarray
    gap_median_hours: np.ndarray | None = None
    gap_mean_hours: np.ndarray | None = None
    gap_no_return_prob: np.ndarray | None = None
    gap_log_density: np.ndarray | None = None
    gap_quantiles: dict[float, np.ndarray] | None = None
    gap_p_within: dict[float, np.ndarray] | None = None


def check_split(split: Split) -> None:
    """Clear errors for splits the protocol cannot evaluate."""
    for name, frame in (("train", split.train), ("test", split.test)):
        missing = [c for c in C.EVENT_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} split lacks columns {missing}")
    if len(split.train) == 0 or len(split.test) == 0:
        raise ValueError("the split needs both train and test events")
    n = split.n_items
    for name, frame in (("train", split.train), ("test", split.test)):
        ids = frame[C.ITEM_ID].to_numpy()
        if ids.min() < 1 or ids.max() > n:
            raise ValueError(f"{name} item ids must lie in 1..{n} (items/ table), got {ids.min()}..{ids.max()}")


def session_table(split: Split) -> pd.DataFrame:
    """One row per session (train and test): user, session_index, first/last item, gap, flags."""
    parts = []
    for frame, is_test in ((split.train, False), (split.test, True)):
        g = frame.groupby([C.USER_ID, C.SESSION_INDEX], sort=True)
        s = g.agg(
            first_item=(C.ITEM_ID, "first"),
            last_item=(C.ITEM_ID, "last"),
            gap_seconds=(C.GAP_BEFORE_SECONDS, "first"),
            is_continuation=(C.IS_CONTINUATION, "first"),
        ).reset_index()
        s["is_test"] = is_test
        parts.append(s)
    sessions = pd.concat(parts, ignore_index=True).sort_values([C.USER_ID, C.SESSION_INDEX], kind="stable")
    sessions = sessions.reset_index(drop=True)
    same_user = sessions[C.USER_ID].eq(sessions[C.USER_ID].shift(1))
    sessions["prev_last_item"] = sessions["last_item"].shift(1).where(same_user, 0).fillna(0).astype(np.int64)
    return sessions


def targets_from_split(split: Split) -> Targets:
    """All targets of the test split, in (user, session_index, position) order."""
    check_split(split)
    test = split.test
    pos = test[C.POSITION].to_numpy()
    items = test[C.ITEM_ID].to_numpy(np.int64)
    sess = test[C.SESSION_ID].to_numpy()
    # rows are sorted by user, session, position: the previous row is the previous item of the session
    nxt = np.flatnonzero(pos > 0)
    if len(nxt) and not np.all(sess[nxt - 1] == sess[nxt]):
        raise ValueError("test events are not contiguous per session (positions out of order)")
    sessions = session_table(split)
    ts = sessions[sessions["is_test"]]
    first = ts[~ts["is_continuation"]]
    gaps = first[first["gap_seconds"].notna()]
    return Targets(
        n_items=split.n_items,
        next_users=test[C.USER_ID].to_numpy(np.int64)[nxt],
        next_prev_items=items[nxt - 1],
        next_items=items[nxt],
        first_users=first[C.USER_ID].to_numpy(np.int64),
        first_prev_items=first["prev_last_item"].to_numpy(np.int64),
        first_items=first["first_item"].to_numpy(np.int64),
        gap_users=gaps[C.USER_ID].to_numpy(np.int64),
        gap_true_hours=gaps["gap_seconds"].to_numpy(np.float64) / 3600.0,
    )


def train_gap_hours(split: Split) -> pd.DataFrame:
    """Real training gaps (not continuations, not a user's first session): columns user_id, session_index, hours."""
    s = session_table(split)
    s = s[~s["is_test"] & ~s["is_continuation"] & s["gap_seconds"].notna()]
    return pd.DataFrame({C.USER_ID: s[C.USER_ID].to_numpy(np.int64),
                         C.SESSION_INDEX: s[C.SESSION_INDEX].to_numpy(np.int64),
                         "hours": s["gap_seconds"].to_numpy(np.float64) / 3600.0})


def default_validation_sessions(split: Split) -> int:
    """Sessions per user moved to validation by default: the mean number of test sessions per user.

    The test split holds each user's last 20 % of sessions; moving that many training sessions per
    user gives a validation split of about the size of test (users with few training sessions give
    fewer, see :func:`validation_split`).
    """
    per_user = split.test.groupby(C.USER_ID)[C.SESSION_INDEX].nunique()
    return max(1, round(float(per_user.mean()))) if len(per_user) else 1


def validation_split(split: Split, sessions: int) -> Split:
    """A split made of the training sessions only, for tuning: each user's last ``sessions`` training
    sessions become its test part, always keeping at least 2 training sessions per user (a user with
    n training sessions moves min(sessions, n - 2); users with fewer than 3 give no validation targets).

    Ids (user, session, session_index, item) and the items and users tables are unchanged; the items
    table's train_count is not recomputed (baselines count popularity from ``train`` itself).
    """
    if sessions < 1:
        raise ValueError(f"sessions must be >= 1, got {sessions}")
    tr = split.train
    # session_index is dense per user within train (0..n-1): train holds each user's earliest sessions
    order = tr.groupby(C.USER_ID)[C.SESSION_INDEX].rank(method="dense").astype(np.int64) - 1
    n = tr.groupby(C.USER_ID)[C.SESSION_INDEX].transform("nunique").astype(np.int64)
    keep = np.maximum(n - sessions, 2)
    is_val = (order >= keep).to_numpy()
    return Split(tr[~is_val].reset_index(drop=True), tr[is_val].reset_index(drop=True),
                 split.items, split.users, {"validation_sessions": int(sessions)})
