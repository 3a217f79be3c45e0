"""Sessionize at its edges: schema drift, empty input, input after the run date, hostile paths, an
output folder that cannot be written. Errors come before the heavy work and leave the previous output."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract import columns as C
from jobs.sessionize import SessionizeError, run
from jobs.sessionize.__main__ import main
from jobs.sessionize.io import InputError, OutputError

from .conftest import fill, read_only

pytestmark = [pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]
EPOCH_2009 = 1_230_768_000  # 2009-01-01T00:00:00Z
TIMES = [EPOCH_2009 + 86400 * day + 60 * k for day in (1, 2, 3) for k in (0, 1)]  # 3 sessions of 2


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _parquet(path: Path, **columns: pa.Array) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def previous(tmp_path) -> Path:
    """An output folder of an earlier run: a failed run must leave it byte for byte."""
    out = tmp_path / "out"
    out.mkdir()
    (out / C.STATS_FILE).write_text('{"earlier": true}\n')
    return out


def _intact(out: Path) -> None:
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name)) == [out.name]
    assert [p.name for p in out.iterdir()] == [C.STATS_FILE]
    assert (out / C.STATS_FILE).read_text() == '{"earlier": true}\n'


# --- schema drift -------------------------------------------------------------------------------------
def test_an_extra_column_is_ignored_and_a_quoted_file_name_is_read(spark, tmp_path):
    raw = _csv(tmp_path / """night 'one' "1".csv""", "user_id,item_id,timestamp,country",
               [f"u,{'ab'[k % 2]},{t},NO" for k, t in enumerate(TIMES)])
    stats = run(spark, "events", [str(raw)], tmp_path / "out")
    assert (stats["raw_rows"], stats["quarantined_rows"], stats["events"], stats["sessions"]) == (6, 0, 6, 3)
    assert pd.read_parquet(tmp_path / "out" / C.ITEMS_DIR)[C.ITEM_KEY].tolist() == ["a", "b"]


def test_a_file_whose_name_looks_like_a_glob_is_read_as_itself(spark, tmp_path):
    # Hadoop reads raw[1].csv as the pattern raw1.csv: the file beside it must not be read instead
    raw = _csv(tmp_path / "raw[1].csv", "user_id,item_id,timestamp",
               [f"u,{'ab'[k % 2]},{t}" for k, t in enumerate(TIMES)])
    _csv(tmp_path / "raw1.csv", "user_id,item_id,timestamp", ["v,c,1230768000"])
    stats = run(spark, "events", [str(raw)], tmp_path / "out")
    assert (stats["raw_rows"], stats["events"], stats["sessions"]) == (6, 6, 3)
    # a real pattern still globs: both files, 7 rows
    both = run(spark, "events", [str(tmp_path / "raw*.csv")], tmp_path / "out2", max_bad_fraction=1.0)
    assert both["raw_rows"] == 7


@pytest.mark.parametrize(("kind", "message"), [
    ("csv", r"^item column 'item_id' not among the input's columns \['user_id', 'timestamp', 'item'\]$"),
    ("parquet", r"^input '.*/in\.parquet' lacks column\(s\) \['item_id'\]; it has \['user_id', 'timestamp', "
                r"'item'\]$"),
])
def test_a_missing_column_is_an_input_error_naming_it(spark, tmp_path, previous, kind, message):
    if kind == "csv":
        raw = _csv(tmp_path / "in.csv", "user_id,timestamp,item", [f"u,{t},a" for t in TIMES])
    else:
        raw = _parquet(tmp_path / "in.parquet", user_id=pa.array(["u"] * 6), timestamp=pa.array(TIMES),
                       item=pa.array(["a"] * 6))
    with pytest.raises(InputError, match=message):
        run(spark, "events", [str(raw)], previous)
    _intact(previous)


@pytest.mark.parametrize(("column", "values", "message"), [
    ("timestamp", pa.array([True] * 6), "time column 'timestamp' has type boolean"),
    ("timestamp", pa.array([dt.date(2009, 1, 2)] * 6), "time column 'timestamp' has type date"),
    ("timestamp", pa.array([{"s": t} for t in TIMES]), "time column 'timestamp' has type struct<s:bigint>"),
    ("user_id", pa.array([1.5] * 6), "user column 'user_id' has type double"),
    ("item_id", pa.array([[1]] * 6), "item column 'item_id' has type array<bigint>"),
])
def test_a_retyped_parquet_column_is_an_input_error_naming_it(spark, tmp_path, previous, column, values, message):
    columns = {"user_id": pa.array(["u"] * 6), "item_id": pa.array(["a", "b"] * 3), "timestamp": pa.array(TIMES)}
    raw = _parquet(tmp_path / "in.parquet", **{**columns, column: values})
    with pytest.raises(InputError, match=rf"^input '{raw}': {message.replace('[', '.')}; expected one of "):
        run(spark, "events", [str(raw)], previous)
    _intact(previous)


def test_accepted_parquet_types_are_read(spark, tmp_path):
    """Integer keys and native timestamps are not drift: they are read as the same keys and times."""
    raw = _parquet(tmp_path / "in.parquet", user_id=pa.array([7] * 6, pa.int32()),
                   item_id=pa.array([1, 2] * 3, pa.int64()),
                   timestamp=pa.array([t * 10**6 for t in TIMES], pa.timestamp("us", tz="UTC")))
    stats = run(spark, "events", [str(raw)], tmp_path / "out")
    assert (stats["quarantined_rows"], stats["events"]) == (0, 6)
    assert pd.read_parquet(tmp_path / "out" / C.USERS_DIR)[C.USER_KEY].tolist() == ["7"]


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_naming_a_retyped_column(tmp_path):
    raw = _parquet(tmp_path / "in.parquet", user_id=pa.array(["u"] * 6), item_id=pa.array(["a"] * 6),
                   timestamp=pa.array([True] * 6))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.sessionize", "--format", "events", "--input", str(raw),
         "--output", str(tmp_path / "out"), "--master", "local[1]", "--conf", "spark.ui.enabled=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"input '{raw}': time column 'timestamp' has type boolean; expected one of" in errors[0]
    assert not (tmp_path / "out").exists()


# --- empty input, input after the run date ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["lastfm", "reddit", "events"])
def test_empty_input_refuses_to_publish(spark, tmp_path, previous, fmt):
    """A night without data is an error (exit 3 from the command), never an empty published night."""
    if fmt == "lastfm":
        (raw := tmp_path / "in.tsv").write_bytes(b"")
    elif fmt == "reddit":
        raw = _csv(tmp_path / "in.csv", "username,subreddit,utc", [])
    else:
        raw = _parquet(tmp_path / "in.parquet", user_id=pa.array([], pa.string()),
                       item_id=pa.array([], pa.string()), timestamp=pa.array([], pa.float64()))
    with pytest.raises(SessionizeError, match=r"^the inputs hold no data rows \(1 file\(s\)\)$"):
        run(spark, fmt, [str(raw)], previous)
    _intact(previous)


def test_input_entirely_after_the_run_date_refuses_to_publish(spark, tmp_path, previous):
    raw = _csv(tmp_path / "in.csv", "user_id,item_id,timestamp",
               [f"u,{'ab'[k % 2]},{t}" for k, t in enumerate(TIMES)] + ["u,,1"])  # and one bad row
    with pytest.raises(SessionizeError, match=r"^all 6 valid rows of the inputs are after the run date 2008-12-31 "
                                              r"\(the earliest at 2009-01-02T00:00:00Z\); nothing to sessionize$"):
        run(spark, "events", [str(raw)], previous, run_date="2008-12-31", max_bad_fraction=0.5)
    _intact(previous)


# --- hostile paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "path"), [
    ("input", "raw\x00.csv"), ("input", "raw\n.csv"), ("output", "out\x00/x"), ("output", "out\r")])
def test_paths_with_control_characters_are_refused_before_spark(tmp_path, monkeypatch, capsys, where, path):
    import jobs.spark

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark started for a bad path")

    monkeypatch.setattr(jobs.spark, "build_spark", no_spark)
    inputs, output = (path, str(tmp_path / "out")) if where == "input" else ("raw.csv", path)
    with pytest.raises(ValueError, match=rf"^{where} .* holds a control character"):
        run(None, "events", [inputs], output)  # refused before the session is touched
    with pytest.raises(SystemExit) as done:
        main(["--format", "events", "--input", inputs, "--output", output])
    assert done.value.code == 2
    assert f"--{where} {path!r} holds a control character" in capsys.readouterr().err


# --- an output folder that cannot be written ----------------------------------------------------------------
def test_an_output_under_a_regular_file_is_an_output_error(spark, tmp_path):
    (tmp_path / "file").write_text("x")
    raw = _csv(tmp_path / "in.csv", "user_id,item_id,timestamp", [f"u,a,{t}" for t in TIMES])
    with pytest.raises(OutputError, match=rf"^cannot create the output folder {tmp_path}/file/out: (File exists|Not a directory)$"):
        run(spark, "events", [str(raw)], tmp_path / "file" / "out")


def test_a_read_only_output_folder_leaves_the_previous_output(spark, tmp_path, previous):
    raw = _csv(tmp_path / "in.csv", "user_id,item_id,timestamp", [f"u,{'ab'[k % 2]},{t}" for k, t in enumerate(TIMES)])
    with read_only(previous.parent), pytest.raises(
            OutputError, match=rf"^cannot create the output folder {previous}: (Operation not permitted|Permission denied)$"):
        run(spark, "events", [str(raw)], previous)
    _intact(previous)


def test_a_full_disk_mid_run_leaves_the_previous_output(spark, tmp_path, tiny_fs):
    out = tiny_fs / "out"
    out.mkdir()
    (out / C.STATS_FILE).write_text('{"earlier": true}\n')
    # enough rows that the parsed copy and the splits need more than the few KiB left
    raw = _csv(tmp_path / "in.csv", "user_id,item_id,timestamp",
               [f"user{u},item{(u * 7 + k) % 50},{EPOCH_2009 + 3600 * k + u}" for u in range(40) for k in range(60)])
    fill(tiny_fs, leave=16 * 1024)
    with pytest.raises(OutputError, match=rf"^cannot write the output folder {out}: No space left on device$"):
        run(spark, "events", [str(raw)], out)
    (tiny_fs / "filler").unlink()
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["out"]  # no staging folder left
    assert json.loads((out / C.STATS_FILE).read_text()) == {"earlier": True}
    assert [p.name for p in out.iterdir()] == [C.STATS_FILE]
