"""``bench/sessionize_pandas.py``, the fast single-process side of the sessionize benchmark, gives
exactly what the pandas reference gives (and so what the job gives): every table and stats.json, on
generated logs with every malformed kind, and on CR line ends."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from contract import reference as R
from tests.conftest import REPO_ROOT, synthesize


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sessionize_pandas", REPO_ROOT / "bench" / "sessionize_pandas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_same(fast, ref) -> None:
    for name in ("train", "test", "items", "users", "quarantine"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(ref, name), obj=name)
    assert fast.stats == ref.stats


@pytest.mark.parametrize("fmt", ["lastfm", "reddit"])
def test_fast_side_equals_the_reference_on_generated_malformed_logs(tmp_path, fmt):
    path, summary = synthesize(tmp_path, fmt, events=3000, malformed=0.05, seed=5)
    assert all(n > 0 for n in summary["malformed_by_kind"].values())
    fast = _bench().sessionize_files(fmt, [str(path)])
    ref = R.sessionize_files(fmt, [str(path)], max_bad_fraction=1.0)
    assert len(fast.quarantine) == summary["malformed_lines"]
    _assert_same(fast, ref)


def test_fast_side_equals_the_reference_with_cr_line_ends_and_odd_lines(tmp_path):
    good = [f"user_a\t2009-01-0{d}T00:0{m}:00Z\tm-{m}\tN{m}\t\tt" for d in (1, 2, 3) for m in (0, 1)]
    lines = good + [
        "user_a\t2009-01-01T00:05:00Z\t\tSolo\t\tt",  # no MBID: the artist name is the key
        "user_a\t2009-02-30T00:02:00Z\tm-x\tX\t\tt",  # no such day: unparsable
        "user_a\t1969-12-31T23:59:59Z\tm-x\tX\t\tt",  # negative
        "user_a\t2009-01-01 00:03:00\tm-y\tY\t\tt",  # ISO without T and zone: the reference's path
        " \t2009-01-01T00:04:00Z\tm-y\tY\t\tt",  # blank user
    ]
    src = tmp_path / "cr.tsv"
    src.write_bytes("\r\n".join(lines).encode() + b"\r" + "\n".join(lines).encode() + b"\n")
    fast = _bench().sessionize_files("lastfm", [str(src)])
    _assert_same(fast, R.sessionize_files("lastfm", [str(src)], max_bad_fraction=1.0))
