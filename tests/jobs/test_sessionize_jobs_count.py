"""The number of Spark jobs a small night triggers, pinned (docs/sessionize_benchmark.md): on small
nights Spark's fixed cost per job dominates, so a change that adds a pass, a count or a write shows
here. A job count is deterministic for a given input and settings, unlike timing.

When this test fails after a deliberate change, check the new count against the phases in the
message and update the pins together with the benchmark doc.
"""

from __future__ import annotations

import pytest

from jobs.sessionize import run

pytestmark = pytest.mark.spark

# Per phase of jobs.sessionize.job (AQE on: each shuffle stage is a job of its own), with the test
# session's settings (tests/conftest.py: local[2], 2 shuffle partitions).
EXPECTED_PHASE_JOBS = {
    "parse and count": 3,  # parsed rows written once; one aggregation for line numbers and counts
    "write quarantine": 2,
    "sessionize": 2,  # the windows, once, written
    "write users and items": 8,  # one aggregation per table, ids by a window, one file each
    "write train and test": 5,  # both splits in one sorted write
    "stats": 2,  # one aggregation for every figure (the item count from items/' footer)
}


def _night() -> list[bytes]:
    """Two users with three sessions each, one repeat and one malformed line (a quarantine row)."""
    lines = []
    for user in ("user_a", "user_b"):
        for day in (1, 2, 3):
            for minute, (mbid, name) in enumerate((("m-x", "X"), ("m-y", "Y"), ("m-y", "Y"))):
                lines.append(f"{user}\t2009-01-0{day}T00:0{minute}:00Z\t{mbid}\t{name}\t\tt".encode())
    lines.append(b"user_a\tnot a time\tm-x\tX\t\tt")
    return lines


def test_small_night_runs_a_pinned_number_of_spark_jobs(spark, tmp_path):
    src = tmp_path / "night.tsv"
    src.write_bytes(b"\n".join(_night()) + b"\n")
    sc = spark.sparkContext
    group = "test-sessionize-jobs-count"
    sc.setJobGroup(group, "counting the sessionize job's Spark jobs")
    metrics: dict = {}
    try:
        stats = run(spark, "lastfm", [str(src)], tmp_path / "out", max_bad_fraction=0.5, metrics=metrics)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    assert (stats["users"], stats["sessions"], stats["events"], stats["quarantined_rows"]) == (2, 6, 12, 1)
    # counted by the job within the caller's group, and independently here by the status tracker
    in_group = len(sc.statusTracker().getJobIdsForGroup(group))
    phases = {name: p["spark_jobs"] for name, p in metrics["phases"].items()}
    assert metrics["spark_jobs"] == in_group == sum(phases.values())
    assert phases == EXPECTED_PHASE_JOBS, phases


def test_the_job_leaves_no_job_group_behind(spark, tmp_path):
    src = tmp_path / "night.tsv"
    src.write_bytes(b"\n".join(_night()) + b"\n")
    sc = spark.sparkContext
    assert sc.getLocalProperty("spark.jobGroup.id") is None
    metrics: dict = {}
    run(spark, "lastfm", [str(src)], tmp_path / "out", max_bad_fraction=0.5, metrics=metrics)
    assert sc.getLocalProperty("spark.jobGroup.id") is None
    assert metrics["spark_jobs"] == sum(EXPECTED_PHASE_JOBS.values())
