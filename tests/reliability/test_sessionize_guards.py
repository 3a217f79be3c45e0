"""Sessionize under bad input: control characters in keys, a truncated gzip, non-finite options."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from contract import columns as C
from jobs.sessionize import run
from jobs.sessionize.__main__ import main
from jobs.sessionize.io import InputError

pytestmark = [pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]


def _good_lines(user: str = "user_a") -> list[bytes]:
    """Three sessions of two artists each, a day apart (a user the rules keep)."""
    out = []
    for day in (1, 2, 3):
        for minute, (mbid, name) in enumerate((("m-x", "X"), ("m-y", "Y"))):
            out.append(f"{user}\t2009-01-0{day}T00:0{minute}:00Z\t{mbid}\t{name}\t\tt".encode())
    return out


BAD = [
    b"us\x00er_b\t2009-01-01T00:00:00Z\tm-x\tX\t\tt",  # NUL in the user key
    b"user_a\t2009-01-01T00:00:30Z\tm-\x1bz\tZ\t\tt",  # ESC in the item key (MBID)
    b"user_a\t2009-01-01T00:00:40Z\t\tA\x0bB\t\tt",  # vertical tab in the artist standing in for the key
    b"user_a\t2009-01-01T00:00:50Z\tm-w\tW\x01\t\tt",  # control character in the display name
]


def test_control_characters_in_keys_are_quarantined(spark, tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_bytes(b"\n".join(_good_lines() + BAD) + b"\n")
    stats = run(spark, "lastfm", [str(raw)], tmp_path / "out", max_bad_fraction=0.5)
    assert stats["quarantine_reasons"]["control_character"] == len(BAD)
    assert stats["quarantined_rows"] == len(BAD) and stats["accounting_ok"]
    quarantine = pd.read_parquet(tmp_path / "out" / C.QUARANTINE_DIR)
    assert quarantine[C.LINE_NUMBER].tolist() == [7, 8, 9, 10]
    assert set(quarantine[C.REASON]) == {"control_character"}
    keys = [*pd.read_parquet(tmp_path / "out" / C.USERS_DIR)[C.USER_KEY],
            *pd.read_parquet(tmp_path / "out" / C.ITEMS_DIR)[C.ITEM_KEY],
            *pd.read_parquet(tmp_path / "out" / C.ITEMS_DIR)[C.ITEM_NAME]]
    assert keys and not any(ch < " " for key in keys for ch in key)


def test_a_tab_inside_a_key_is_not_a_control_character(spark, tmp_path):
    raw = tmp_path / "events.csv"
    rows = ["user_id,item_id,timestamp"] + [
        f"u\t1,{item},{86400 * day + 60 * k}" for day in (1, 2, 3) for k, item in enumerate(("a\tb", "c"))]
    raw.write_text("\n".join(rows) + "\n")
    stats = run(spark, "events", [str(raw)], tmp_path / "out")
    assert stats["quarantined_rows"] == 0
    assert pd.read_parquet(tmp_path / "out" / C.USERS_DIR)[C.USER_KEY].tolist() == ["u\t1"]


@pytest.fixture
def truncated(tmp_path) -> Path:
    path = tmp_path / "cut.tsv.gz"
    data = gzip.compress(b"\n".join(_good_lines() * 400) + b"\n")
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_truncated_gzip_is_an_input_error_naming_the_file(spark, truncated, tmp_path):
    with pytest.raises(InputError, match=rf"^cannot read input file {truncated}: java\.io\.EOFException"):
        run(spark, "lastfm", [str(truncated)], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing published


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_for_a_truncated_gzip(truncated, tmp_path):
    spark_log = tmp_path / "spark.log"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.sessionize", "--format", "lastfm", "--input", str(truncated),
         "--output", str(tmp_path / "out"), "--master", "local[1]", "--spark-log", str(spark_log),
         "--conf", "spark.ui.enabled=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr[-3000:]
    assert f"cannot read input file {truncated}: java.io.EOFException: Unexpected end of input stream" in errors[0]
    assert str(spark_log) in errors[0]
    # no Java or Python stack trace on stderr: it is in Spark's log file
    assert "Traceback" not in done.stderr and "\tat " not in done.stderr and "Py4J" not in done.stderr
    assert "\tat org.apache" in spark_log.read_text()


@pytest.mark.parametrize("option", [
    ["--max-bad-fraction", "nan"], ["--max-bad-fraction", "inf"], ["--max-bad-fraction", "1.5"],
    ["--session-gap-seconds", "nan"], ["--session-gap-seconds", "inf"], ["--session-gap-seconds", "0"],
    ["--train-fraction", "nan"],
])
def test_cli_floats_must_be_finite_and_in_range_before_spark_starts(option, monkeypatch, capsys, tmp_path):
    import jobs.spark

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark started for a bad option")

    monkeypatch.setattr(jobs.spark, "build_spark", no_spark)
    with pytest.raises(SystemExit) as done:
        main(["--format", "lastfm", "--input", "x.tsv", "--output", str(tmp_path / "out"), *option])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert option[0] in err or option[0][2:].replace("-", "_") in err, err


@pytest.mark.parametrize("kw", [{"max_bad_fraction": float("nan")}, {"max_bad_fraction": float("inf")},
                                {"session_gap_seconds": float("nan")}, {"session_gap_seconds": float("inf")}])
def test_run_refuses_non_finite_options(spark, kw, tmp_path):
    with pytest.raises(ValueError, match="max_bad_fraction|session_gap_seconds"):
        run(spark, "lastfm", ["x.tsv"], tmp_path / "out", **kw)
