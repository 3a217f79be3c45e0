"""The pandas reference (``contract.reference``) against the Spark job: whole tables, quarantine rows and
stats.json equal on slices of the real excerpts and on generated data with every malformed kind the
generator makes (each quarantined with its reason, as many as the generator wrote), the parsers equal
line by line on the malformed kinds it cannot make, and the benchmark's wrapper of the reference on the
hand-worked case (docs/design.md §2, §3)."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from contract import columns as C
from contract import constants as K
from contract import reference as R
from contract.rules import EventsOptions, events_layout
from jobs.sessionize import run
from tests.conftest import REPO_ROOT, shared_file, synthesize
from thrnn.io import read_split


def assert_same_as_job(out_dir, stats: dict, ref: R.Output) -> None:
    split = read_split(out_dir)
    for part in ("train", "test", "items", "users"):
        pd.testing.assert_frame_equal(getattr(ref, part), getattr(split, part), obj=part)
    pd.testing.assert_frame_equal(ref.quarantine, pq.read_table(out_dir / C.QUARANTINE_DIR).to_pandas(), obj="quarantine")
    job_stats = {k: v for k, v in stats.items() if k != "elapsed_seconds"}
    assert ref.stats == job_stats
    assert json.loads((out_dir / C.STATS_FILE).read_text())["raw_rows"] == ref.stats["raw_rows"]


def head_of(src, dst, lines: int):
    with gzip.open(src, "rb") as fh:
        dst.write_bytes(b"".join(line for _, line in zip(range(lines), fh, strict=False)))
    return dst


@pytest.mark.spark
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("relative", "fmt", "lines", "options"),
    [
        ("lastfm-1k-jodie-subset/lastfm_jodie_first10pct.tsv.gz", "events", 15_000,
         {"session_gap_seconds": 3600, "delimiter": "\t", "header": False}),
        ("reddit-jodie-subset/reddit_jodie_first20pct.tsv.gz", "events", 15_000,
         {"session_gap_seconds": 1800, "delimiter": "\t", "header": False}),
        ("lastfm-1k/user_000001_full_history.tsv.gz", "lastfm", 10_000, {"run_date": "2008-06-30"}),
    ],
)  # fmt: skip
def test_reference_equals_the_job_on_real_excerpts(spark, tmp_path, relative, fmt, lines, options):
    path = head_of(shared_file(relative), tmp_path / "head.tsv", lines)  # a slice: the whole file is slow
    stats = run(spark, fmt, [str(path)], tmp_path / "out", **options)
    assert_same_as_job(tmp_path / "out", stats, R.sessionize_files(fmt, [str(path)], **options))


@pytest.mark.spark
@pytest.mark.parametrize("fmt", K.TEXT_LOG_FORMATS)
def test_reference_equals_the_job_on_generated_data_with_every_malformed_kind(spark, tmp_path, fmt):
    path, summary = synthesize(tmp_path, fmt, events=3000, malformed=0.05, seed=11)
    kinds = summary["malformed_by_kind"]
    assert set(kinds) == set(K.REASONS) - {K.CONTROL_CHARACTER} - (
        {K.NON_FINITE_TIMESTAMP, K.TIMESTAMP_OUT_OF_RANGE} if fmt == K.LASTFM else set())
    assert all(n > 0 for n in kinds.values()), kinds
    # a second file (input order breaks ties) and a run date cutting the log
    second = tmp_path / "second.txt"
    lines = path.read_bytes().splitlines(keepends=True)
    header = lines[:1] if fmt == K.REDDIT else []
    second.write_bytes(b"".join(header + lines[-500:]))
    inputs = [str(path), str(second)]
    run_date = dt.date.fromisoformat(summary["last_event"][:10]) - dt.timedelta(days=3)
    options = {"max_bad_fraction": 0.1, "run_date": run_date.isoformat()}
    stats = run(spark, fmt, inputs, tmp_path / "out", **options)
    assert {k for k, v in stats["quarantine_reasons"].items() if v} == set(kinds)
    assert stats["raw_rows"] == summary["lines"] + 500 and stats["excluded_after_run_date"] > 0
    # every malformed line of the generated file is quarantined, with the kind the generator gave it
    quarantine = pq.read_table(tmp_path / "out" / C.QUARANTINE_DIR).to_pandas()
    generated = quarantine[quarantine[C.SOURCE_FILE].str.endswith(path.name)]
    assert generated[C.REASON].value_counts().to_dict() == kinds
    assert_same_as_job(tmp_path / "out", stats, R.sessionize_files(fmt, inputs, **options))


# Time fields, numbers and keys beyond what the generator writes: parsed by the job's parser and the
# reference's, line by line.
TIMES = [
    "1.5", " 12 ", "\t12", "1e5", "1E5", "1.5d", "1.5f", "0x1p3", "0x1.8P1d", "nan", "NaN", "+nan", "-NaN", "inf",
    "+inf", "-Infinity", "INF", "1_000", ".5", "5.", "+.5", "-0", "-1", "1e400", "1.48e9x", "", " ", "abc",
    "1241478537.0000005", "0.0000005", "253402300799", "253402300799.5", "\u0661\u0662",
    "2009-05-04T23:08:57Z", "2009-05-04 23:08:57", "2009-05-04T23:08", "2009-05-04T23:08Z",
    "2009-05-04T23:08:57.123456789Z", "2009-05-04T23:08:57+02", "2009-05-04T23:08:57+0230",
    "2009-05-04T23:08:57-02:30", "2009-05-04T23:08:57+19:00", "2009-05-04T23:08:57+18:00",
    "2009-05-04T23:08:57+14:60", "2024-13-45T25:61:00Z", "2009-02-29T00:00:00Z", "2008-02-29T00:00:00Z",
    "2009-05-04T24:00:00Z", "2009-05-04T23:59:60Z", "0000-01-01T00:00:00Z", "1969-12-31T23:59:59.9999995Z",
    "9999-12-31T23:59:59.999999-01:00", "2009-05-04t23:08:57Z", "\u0662009-05-04T23:08:57Z",
]  # fmt: skip
KEYS = [("u", "i"), ("", "i"), ("u", " "), ("u\x00", "i"), ("u", "i\x1b"), ("u\tv", "i"), ('"u"', '"i"'),
        ('"u', "i\x7f"), ("\u2028u", "i")]  # fmt: skip


def parse_with_spark(spark, lines: list[str], layout) -> list[tuple]:
    from jobs import schemas as S
    from jobs.sessionize import transforms as T

    df = spark.createDataFrame([(0, 0, i, v) for i, v in enumerate(lines)], S.LINE_SCHEMA)
    rows = T.parse_text_lines(df, layout).orderBy(S.ROW_IN_BLOCK).collect()
    return [(r[C.REASON], r[S.USER_KEY_RAW], r[S.ITEM_KEY_RAW], r[S.ITEM_NAME_RAW], r[S.TS_US]) for r in rows]


@pytest.mark.spark
@pytest.mark.parametrize("layout_name", ["lastfm", "reddit", "events"])
def test_reference_parser_equals_the_jobs_parser(spark, layout_name):
    if layout_name == "lastfm":
        layout = R.LASTFM_LAYOUT
        lines = [f"{u}\t{t}\tmbid\t{i}\t\ttrack" for t in TIMES for u, i in KEYS[:1]]
        lines += [f"{u}\t2009-05-04T23:08:57Z\t\t{i}\t\ttrack" for u, i in KEYS] + ["", "a\tb"]
    elif layout_name == "reddit":
        layout = R.REDDIT_LAYOUT
        lines = [f"u,i,{t}" for t in TIMES] + [f"{u},{i},5" for u, i in KEYS] + ["", "a,b", "a,b,1,2"]
    else:
        layout = events_layout(EventsOptions(item_name_col="name"), ["user_id", "item_id", "timestamp", "name"])
        lines = [f"u,i,{t},n" for t in TIMES] + [f"{u},{i},5,{i}" for u, i in KEYS] + ['"u","i","5",""']
    ref = [R.parse_line(line.encode(), layout) for line in lines]
    assert ref == parse_with_spark(spark, lines, layout)


def test_reference_refuses_what_it_does_not_cover(tmp_path):
    with pytest.raises(ValueError, match="Spark-only"):
        R.sessionize_files("events", [str(tmp_path / "x.parquet")])


def test_bench_wrapper_on_the_hand_worked_lastfm_case(tmp_path):
    """``bench/sessionize_pandas.py`` (the reference behind the benchmark) gives the hand-worked figures."""
    import importlib.util

    from tests.jobs.conftest import FILE0, FILE1, expected_stats  # the hand-worked case

    spec = importlib.util.spec_from_file_location("bench_sessionize_pandas", REPO_ROOT / "bench" / "sessionize_pandas.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    first, second = tmp_path / "first.tsv", tmp_path / "second.tsv"
    first.write_bytes(b"\n".join(FILE0) + b"\n")
    second.write_bytes(b"\n".join(FILE1) + b"\n")
    stats = bench.sessionize_pandas("lastfm", [str(first), str(second)], run_date="2009-01-04")
    assert {k: stats[k] for k in C.STATS_KEYS} == expected_stats()
