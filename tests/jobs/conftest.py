"""The hand-worked lastfm case of the sessionize tests: two raw files and the figures they give
(checked against the Spark job in test_sessionize_job.py and the pandas reference in
test_sessionize_reference.py)."""

from __future__ import annotations

from contract import constants as K

# File 0 (gzip, given first although its name sorts last): user_a, six bad lines, one user_b line.
FILE0 = [
    b"user_a\t2009-01-02T00:02:00Z\tm-x\tX\t\tt1",
    b"user_a\t2009-01-02T00:00:00Z\tm-y\tY\t\tt2",
    b"user_a\t2009-01-01T05:01:00Z\tm-y\tY\t\tt3",
    b"user_a\t2009-01-01T05:00:00Z\tm-x\tX (alt name)\t\tt4",
    b"user_a\t2009-01-01T00:03:00Z\t\tSolo Artist\t\tt5",  # no MBID: the name is the key
    b"user_a\t2009-01-01T00:00:00Z\tm-x\tX\t\tt6",
    b"user_a\t2009-01-01T00:00:00Z\tm-x\tX",  # 4 columns
    b"user_a\tyesterday\tm-x\tX\t\tt",
    b"user_a\t1969-12-31T23:59:59Z\tm-x\tX\t\tt",
    b"\t2009-01-01T00:00:00Z\tm-x\tX\t\tt",
    b"user_a\t2009-01-01T00:00:00Z\t\t\t\tt",  # neither MBID nor name
    b"user_a\t2009-01-01T00:00:00Z\tm-x\tX\xff\xfe\t\tt",  # invalid UTF-8
    b"user_b\t2009-01-01T00:00:00Z\tm-z\tZ\t\tt7",  # ties with file 1's last line: file order wins
]
FILE1 = [
    b"user_b\t2009-01-05T00:00:00Z\tm-x\tX\t\tt8",  # after the run date
    b"user_b\t2009-01-03T00:01:00Z\tm-y\tY\t\tt9",
    b"user_b\t2009-01-03T00:00:00Z\tm-z\tZ\t\tt10",
    b"user_b\t2009-01-01T02:01:00Z\tm-z\tZ\t\tt11",
    b"user_b\t2009-01-01T02:00:30Z\tm-x\tX\t\tt12",  # repeat of the line below
    b"user_b\t2009-01-01T02:00:01Z\tm-x\tX\t\tt13",
    b"user_b\t2009-01-01T00:00:00Z\tm-y\tY\t\tt14",
]
# the reason of each bad line of FILE0, in line order
BAD_REASONS = [
    K.WRONG_COLUMN_COUNT,
    K.UNPARSABLE_TIMESTAMP,
    K.NEGATIVE_TIMESTAMP,
    K.EMPTY_USER,
    K.EMPTY_ITEM,
    K.INVALID_UTF8,
]


def expected_stats() -> dict:
    """stats.json figures of the hand-worked lastfm case (FILE0, FILE1, run date 2009-01-04)."""
    return {
        "raw_rows": 20,
        "quarantined_rows": 6,
        "excluded_after_run_date": 1,
        "collapsed_repeats": 1,
        "dropped_short_sessions": 0,
        "dropped_long_sessions": 0,
        "dropped_trailing_chunks": 0,
        "dropped_users": 0,
        "users": 2,
        "sessions": 6,
        "events": 12,
        "items": 4,
        "avg_session_length": 2.0,
        "sessions_per_user": 3.0,
        "train_sessions": 4,
        "test_sessions": 2,
        "train_events": 8,
        "test_events": 4,
    }
