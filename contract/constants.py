"""Constants of the input formats and the sessionization rules (docs/design.md §2, §3), shared by the
Spark job (``jobs.sessionize``), its pandas reference (``contract.reference``), the generator
(``synth``), the benches and the tests.

Plain values with no Spark or torch import, so that every one of them can read them from here instead
of keeping a copy.
"""

from __future__ import annotations

# --- input formats (docs/design.md §2) -------------------------------------------------------------
LASTFM = "lastfm"
REDDIT = "reddit"
EVENTS = "events"
FORMATS = (LASTFM, REDDIT, EVENTS)
TEXT_LOG_FORMATS = (LASTFM, REDDIT)  # fixed layouts of raw text logs (what synth writes)
# Rule 1's gap threshold per format, seconds (the paper's values, docs/design.md §3.1).
DEFAULT_GAP_SECONDS = {LASTFM: 3600.0, REDDIT: 1800.0, EVENTS: 3600.0}

# --- quarantine reasons, in the order they are checked: a row gets the first that applies -----------
INVALID_UTF8 = "invalid_utf8"
WRONG_COLUMN_COUNT = "wrong_column_count"
EMPTY_USER = "empty_user"
EMPTY_ITEM = "empty_item"
# NUL and the other C0 controls but tab in a user key, item key or item name: PostgreSQL refuses NUL
# in text, and a key with a line break or escape code breaks every tool that prints it
CONTROL_CHARACTER = "control_character"
UNPARSABLE_TIMESTAMP = "unparsable_timestamp"
NON_FINITE_TIMESTAMP = "non_finite_timestamp"
NEGATIVE_TIMESTAMP = "negative_timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
REASONS = [
    INVALID_UTF8,
    WRONG_COLUMN_COUNT,
    EMPTY_USER,
    EMPTY_ITEM,
    CONTROL_CHARACTER,
    UNPARSABLE_TIMESTAMP,
    NON_FINITE_TIMESTAMP,
    NEGATIVE_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
]

# --- timestamps -----------------------------------------------------------------------------------
MAX_EPOCH_SECONDS = 253402300799.0  # 9999-12-31T23:59:59Z, the largest Spark timestamp we accept
CONTROL_RE = r"[\x00-\x08\x0A-\x1F]"  # C0 controls except tab
# A number the ``auto`` time kind reads as epoch seconds (anything else is tried as ISO-8601).
NUMERIC_RE = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)$"
# ISO-8601 date and time, optional seconds, fraction and zone (a missing zone means UTC).
ISO_8601_RE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$"

# --- fate of a valid event, one per rule of docs/design.md §3.1 (stats.json events_removed_by_rule) --
KEPT = "kept"
COLLAPSED_REPEAT = "collapsed_repeat"  # rule 2
SHORT_SESSION = "short_session"  # rule 3, length 1
LONG_SESSION = "long_session"  # rule 3, longer than 2L
TRAILING_CHUNK = "trailing_chunk"  # rule 4, a last chunk of length 1
DROPPED_USER = "dropped_user"  # rule 5
FATES = [KEPT, COLLAPSED_REPEAT, SHORT_SESSION, LONG_SESSION, TRAILING_CHUNK, DROPPED_USER]

SEQ_FILE_SHIFT = 2**40  # seq = file_idx * 2**40 + line_number: up to ~1e12 lines per file

# --- raw layouts (docs/design.md §2) --------------------------------------------------------------
LASTFM_COLUMNS = ["userid", "timestamp", "artist_mbid", "artist_name", "track_mbid", "track_name"]
REDDIT_COLUMNS = ["username", "subreddit", "utc"]  # the header every reddit file must start with
EVENTS_DEFAULT_COLUMNS = ["user_id", "item_id", "timestamp"]
