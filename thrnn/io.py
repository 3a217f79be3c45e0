"""Reading (and, for tests and tools, writing) the sessionized Parquet splits of docs/design.md §3.3.

The Spark job ``jobs.sessionize`` is the producer in the pipeline; :func:`split_from_sessions`
builds the same layout from plain Python lists so that model tests need no Spark.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contract import columns as C

EVENT_SCHEMA = pa.schema(
    [
        pa.field(C.USER_ID, pa.int32(), nullable=False),
        pa.field(C.SESSION_ID, pa.int64(), nullable=False),
        pa.field(C.SESSION_INDEX, pa.int32(), nullable=False),
        pa.field(C.POSITION, pa.int16(), nullable=False),
        pa.field(C.ITEM_ID, pa.int32(), nullable=False),
        pa.field(C.EVENT_TIME, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(C.GAP_BEFORE_SECONDS, pa.float64()),
        pa.field(C.IS_CONTINUATION, pa.bool_(), nullable=False),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        pa.field(C.ITEM_ID, pa.int32(), nullable=False),
        pa.field(C.ITEM_KEY, pa.string()),
        pa.field(C.ITEM_NAME, pa.string()),
        pa.field(C.TRAIN_COUNT, pa.int64(), nullable=False),
    ]
)
USER_SCHEMA = pa.schema(
    [pa.field(C.USER_ID, pa.int32(), nullable=False), pa.field(C.USER_KEY, pa.string())]
)


@dataclass
class Split:
    """One sessionize output folder loaded into pandas (events sorted by user, session, position)."""

    train: pd.DataFrame
    test: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    stats: dict[str, Any]

    @property
    def n_items(self) -> int:
        """Largest item id (ids are 1..N, 0 is padding)."""
        return int(self.items[C.ITEM_ID].max()) if len(self.items) else 0

    @property
    def n_users(self) -> int:
        return int(self.users[C.USER_ID].max()) + 1 if len(self.users) else 0


def _read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"missing split part {path} (is this a jobs.sessionize output folder?)")
    return pq.read_table(path, columns=columns).to_pandas()


def read_split(data_dir: str | Path) -> Split:
    """Load train/, test/, items/, users/ and stats.json of a sessionize output folder."""
    d = Path(data_dir)
    order = [C.USER_ID, C.SESSION_INDEX, C.POSITION]
    train = _read_table(d / C.TRAIN_DIR, C.EVENT_COLUMNS).sort_values(order, kind="stable")
    test = _read_table(d / C.TEST_DIR, C.EVENT_COLUMNS).sort_values(order, kind="stable")
    items = _read_table(d / C.ITEMS_DIR).sort_values(C.ITEM_ID, kind="stable")
    users = _read_table(d / C.USERS_DIR).sort_values(C.USER_ID, kind="stable")
    stats_path = d / C.STATS_FILE
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return Split(
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        items.reset_index(drop=True),
        users.reset_index(drop=True),
        stats,
    )


def write_split(
    data_dir: str | Path,
    train: pd.DataFrame,
    test: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    stats: dict[str, Any] | None = None,
) -> Path:
    """Write frames in the split layout (one Parquet file per part). For tests and tools."""
    d = Path(data_dir)
    for sub, frame, schema in (
        (C.TRAIN_DIR, train, EVENT_SCHEMA),
        (C.TEST_DIR, test, EVENT_SCHEMA),
        (C.ITEMS_DIR, items, ITEM_SCHEMA),
        (C.USERS_DIR, users, USER_SCHEMA),
    ):
        (d / sub).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        pq.write_table(table, d / sub / "part-00000.parquet")
    (d / C.STATS_FILE).write_text(json.dumps(stats or {}, indent=2, sort_keys=True))
    return d


def split_from_sessions(
    sessions: dict[int, list[list[tuple[int, float]]]],
    data_dir: str | Path | None = None,
    train_fraction: float = 0.8,
    continuations: dict[int, set[int]] | None = None,
) -> Split:
    """Build a split from ``{user_id: [[(item_id, epoch_seconds), ...], ...]}`` (sessions in time order).

    Applies only the train/test rule (earliest floor(0.8 n) sessions to train) and the gap rule; the
    caller passes sessions that already obey the length rules. ``continuations[user]`` lists session
    indexes that are chunk 2.. of a split session (gap 0). Writes the folder when ``data_dir`` is given.
    """
    continuations = continuations or {}
    rows: list[dict[str, Any]] = []
    session_id = 0
    for user in sorted(sessions):
        user_sessions = sessions[user]
        n_train = math.floor(train_fraction * len(user_sessions))
        prev_end: float | None = None
        for s_idx, sess in enumerate(user_sessions):
            is_cont = s_idx in continuations.get(user, set())
            gap = None if prev_end is None else (0.0 if is_cont else float(sess[0][1] - prev_end))
            for pos, (item, t) in enumerate(sess):
                rows.append(
                    {
                        C.USER_ID: user,
                        C.SESSION_ID: session_id,
                        C.SESSION_INDEX: s_idx,
                        C.POSITION: pos,
                        C.ITEM_ID: item,
                        C.EVENT_TIME: pd.Timestamp(t, unit="s", tz="UTC"),
                        C.GAP_BEFORE_SECONDS: gap,
                        C.IS_CONTINUATION: is_cont,
                        "_train": s_idx < n_train,
                    }
                )
            prev_end = float(sess[-1][1])
            session_id += 1
    events = pd.DataFrame(rows)
    events[C.EVENT_TIME] = events[C.EVENT_TIME].astype("datetime64[us, UTC]")
    train = events[events["_train"]].drop(columns="_train").reset_index(drop=True)
    test = events[~events["_train"]].drop(columns="_train").reset_index(drop=True)
    item_ids = sorted(set(events[C.ITEM_ID]))
    counts = train[C.ITEM_ID].value_counts()
    items = pd.DataFrame(
        {
            C.ITEM_ID: item_ids,
            C.ITEM_KEY: [f"item-{i}" for i in item_ids],
            C.ITEM_NAME: [f"Item {i}" for i in item_ids],
            C.TRAIN_COUNT: [int(counts.get(i, 0)) for i in item_ids],
        }
    )
    users = pd.DataFrame({C.USER_ID: sorted(sessions), C.USER_KEY: [f"user-{u}" for u in sorted(sessions)]})
    if data_dir is not None:
        write_split(data_dir, train, test, items, users)
        return read_split(data_dir)
    return Split(train, test, items, users, {})
