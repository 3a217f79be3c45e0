"""Explicit Spark schemas of the sessionize job's inputs, intermediate tables and outputs
(docs/design.md §2, §3).

Output types follow the table of docs/design.md §3.3 and match ``thrnn.io`` (which reads the files
with pyarrow).
Spark always writes Parquet columns as nullable, so nullability here documents intent only.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from contract import columns as C
from contract.constants import EVENTS_DEFAULT_COLUMNS, LASTFM_COLUMNS, REDDIT_COLUMNS  # noqa: F401

# --- raw inputs (docs/design.md §2) ----------------------------------------------------------------
LASTFM_SCHEMA = StructType([StructField(name, StringType()) for name in LASTFM_COLUMNS])
REDDIT_SCHEMA = StructType(
    [
        StructField("username", StringType()),
        StructField("subreddit", StringType()),
        StructField("utc", DoubleType()),
    ]
)

# --- one raw line as read by jobs.sessionize.io (text formats) --------------------------------------
# Rows of one input file keep their order through (file_idx, block_start, row_in_block): block_start is
# the byte offset of the file split the row came from, row_in_block its monotonically increasing id.
FILE_IDX = "file_idx"
BLOCK_START = "block_start"
ROW_IN_BLOCK = "row_in_block"
LINE_SCHEMA = StructType(
    [
        StructField(FILE_IDX, IntegerType(), False),
        StructField(BLOCK_START, LongType(), False),
        StructField(ROW_IN_BLOCK, LongType(), False),
        StructField("value", StringType()),
    ]
)

# --- parsed and validated events (one row per raw data row) ----------------------------------------
USER_KEY_RAW = "user_key"
ITEM_KEY_RAW = "item_key"
ITEM_NAME_RAW = "item_name"
TS_US = "ts_us"  # event time as microseconds since the epoch (exact comparisons, no float rounding)
SEQ = "seq"  # input order: file_idx * 2**40 + line_number, the tie-breaker for equal times
PARSED_SCHEMA = StructType(
    [
        StructField(FILE_IDX, IntegerType(), False),
        StructField(BLOCK_START, LongType(), False),
        StructField(ROW_IN_BLOCK, LongType(), False),
        StructField(USER_KEY_RAW, StringType()),
        StructField(ITEM_KEY_RAW, StringType()),
        StructField(ITEM_NAME_RAW, StringType()),
        StructField(TS_US, LongType()),
        StructField(C.RAW_RECORD, StringType()),  # only for quarantined rows
        StructField(C.REASON, StringType()),  # null for a valid row
    ]
)

# --- outputs (docs/design.md §3.3) -----------------------------------------------------------------
EVENT_SCHEMA = StructType(
    [
        StructField(C.USER_ID, IntegerType(), False),
        StructField(C.SESSION_ID, LongType(), False),
        StructField(C.SESSION_INDEX, IntegerType(), False),
        StructField(C.POSITION, ShortType(), False),
        StructField(C.ITEM_ID, IntegerType(), False),
        StructField(C.EVENT_TIME, TimestampType(), False),
        StructField(C.GAP_BEFORE_SECONDS, DoubleType(), True),
        StructField(C.IS_CONTINUATION, BooleanType(), False),
    ]
)
ITEM_SCHEMA = StructType(
    [
        StructField(C.ITEM_ID, IntegerType(), False),
        StructField(C.ITEM_KEY, StringType(), False),
        StructField(C.ITEM_NAME, StringType(), True),
        StructField(C.TRAIN_COUNT, LongType(), False),
    ]
)
USER_SCHEMA = StructType(
    [StructField(C.USER_ID, IntegerType(), False), StructField(C.USER_KEY, StringType(), False)]
)
QUARANTINE_SCHEMA = StructType(
    [
        StructField(C.SOURCE_FILE, StringType(), False),
        StructField(C.LINE_NUMBER, LongType(), False),
        StructField(C.RAW_RECORD, StringType(), True),
        StructField(C.REASON, StringType(), False),
    ]
)
