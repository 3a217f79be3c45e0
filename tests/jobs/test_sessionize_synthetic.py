"""The job on generated data: every malformed kind ``synth`` injects is quarantined with its
reason, and the benchmark's pandas side (``bench/sessionize_pandas.py``, the reference ``contract.reference``)
gives the same stats.
"""

from __future__ import annotations

import importlib.util

import pytest

from contract import columns as C
from jobs.sessionize import run
from tests.conftest import REPO_ROOT
from tests.jobs.helpers import synthesize

pytestmark = pytest.mark.spark


def load_bench_pandas():
    spec = importlib.util.spec_from_file_location("bench_sessionize_pandas", REPO_ROOT / "bench" / "sessionize_pandas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reddit_with_every_malformed_kind(spark, tmp_path):
    path, summary = synthesize(tmp_path, "reddit", events=4000, malformed=0.05, seed=3)
    stats = run(spark, "reddit", [str(path)], tmp_path / "out", max_bad_fraction=0.1)
    kinds = summary["malformed_by_kind"]
    assert all(n > 0 for n in kinds.values()), kinds
    assert {k: v for k, v in stats["quarantine_reasons"].items() if v} == kinds
    assert stats["raw_rows"] == summary["events"] + summary["malformed_lines"]
    assert stats["quarantined_rows"] == summary["malformed_lines"]

    pandas_stats = load_bench_pandas().sessionize_pandas("reddit", [str(path)])
    assert {k: pandas_stats[k] for k in C.STATS_KEYS} == pytest.approx({k: stats[k] for k in C.STATS_KEYS})
    # the pandas reference knows the generator's kinds; the job's other reasons stay at 0 here
    assert pandas_stats["quarantine_reasons"] == {
        k: v for k, v in stats["quarantine_reasons"].items() if k in pandas_stats["quarantine_reasons"]}
    assert not any(v for k, v in stats["quarantine_reasons"].items() if k not in pandas_stats["quarantine_reasons"])


def test_bench_pandas_matches_the_hand_worked_lastfm_case(tmp_path):
    from tests.jobs.test_sessionize_job import FILE0, FILE1, expected_stats  # the golden case, no Spark

    first, second = tmp_path / "first.tsv", tmp_path / "second.tsv"
    first.write_bytes(b"\n".join(FILE0) + b"\n")
    second.write_bytes(b"\n".join(FILE1) + b"\n")
    stats = load_bench_pandas().sessionize_pandas("lastfm", [str(first), str(second)], run_date="2009-01-04")
    assert {k: stats[k] for k in C.STATS_KEYS} == expected_stats()
