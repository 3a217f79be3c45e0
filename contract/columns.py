"""Column names and layout of the sessionized Parquet splits (docs/design.md §3.3).

Plain constants with no Spark import, so that the torch package (``thrnn``) and the DAG can use them
without pulling in PySpark.
"""

from __future__ import annotations

# --- events in train/ and test/ (one row per event, sorted by user, session, position) ---
USER_ID = "user_id"  # int32, dense 0..U-1
SESSION_ID = "session_id"  # int64, unique over the dataset, increasing in time within a user
SESSION_INDEX = "session_index"  # int32, 0-based index of the session within the user
POSITION = "position"  # int16, 0-based position within the session
ITEM_ID = "item_id"  # int32, dense 1..N; 0 is padding
EVENT_TIME = "event_time"  # timestamp (UTC)
GAP_BEFORE_SECONDS = "gap_before_seconds"  # double; null for the first session, 0 for continuations
IS_CONTINUATION = "is_continuation"  # boolean; chunk 2.. of a split session

EVENT_COLUMNS = [
    USER_ID,
    SESSION_ID,
    SESSION_INDEX,
    POSITION,
    ITEM_ID,
    EVENT_TIME,
    GAP_BEFORE_SECONDS,
    IS_CONTINUATION,
]

# --- items/ ---
ITEM_KEY = "item_key"  # original key (artist MBID, artist name, subreddit, item id)
ITEM_NAME = "item_name"  # display name (artist name, subreddit, ...)
TRAIN_COUNT = "train_count"  # events of the item in train/
ITEM_COLUMNS = [ITEM_ID, ITEM_KEY, ITEM_NAME, TRAIN_COUNT]

# --- users/ ---
USER_KEY = "user_key"  # original user key
USER_COLUMNS = [USER_ID, USER_KEY]

# --- quarantine/ ---
RAW_RECORD = "raw_record"  # the raw line (or a rendering of the raw row)
REASON = "reason"  # why it was quarantined
SOURCE_FILE = "source_file"  # input file it came from
LINE_NUMBER = "line_number"  # 1-based line (row) number within that file
QUARANTINE_COLUMNS = [SOURCE_FILE, LINE_NUMBER, RAW_RECORD, REASON]

# --- sub-folders and files of one sessionize output folder ---
TRAIN_DIR = "train"
TEST_DIR = "test"
ITEMS_DIR = "items"
USERS_DIR = "users"
QUARANTINE_DIR = "quarantine"
STATS_FILE = "stats.json"

PADDING_ITEM = 0
MAX_SESSION_LENGTH = 20  # L
HISTORY_SESSIONS = 15  # sessions the inter-session GRU looks back over

# Keys of stats.json, in the order of docs/design.md §3.4.
STATS_KEYS = [
    "raw_rows",
    "quarantined_rows",
    "excluded_after_run_date",
    "collapsed_repeats",
    "dropped_short_sessions",
    "dropped_long_sessions",
    "dropped_trailing_chunks",
    "dropped_users",
    "users",
    "sessions",
    "events",
    "items",
    "avg_session_length",
    "sessions_per_user",
    "train_sessions",
    "test_sessions",
    "train_events",
    "test_events",
]
