"""Command line of the sessionize job.

    python -m jobs.sessionize --format lastfm --input raw.tsv.gz --output var/data/lastfm \
        --run-date 2009-05-04 --master 'local[2]'

Under spark-submit (the master and resources come from the submit command; on a cluster ship the
package with ``--py-files``, e.g. a zip of ``jobs/``)::

    spark-submit --master 'local[2]' jobs/sessionize/__main__.py --format reddit \
        --input reddit_data.csv --output /data/reddit

Exit status 0 on success (the stats are printed as JSON), 2 on bad arguments, unreadable input (one
line naming the file, or the column of a Parquet input that is missing or of the wrong type) or an
output folder that cannot be written (no permission, no space; the previous output stays), 3 when the
job refuses to publish (no data rows, every valid row after the run date, too many malformed rows,
nothing left after the rules). When this command starts Spark itself, Spark's own (JVM) log goes to a file
(``--spark-log``), so a failing task's Java traces never flood the terminal.
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script (spark-submit jobs/sessionize/__main__.py): find `jobs`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contract.constants import DEFAULT_GAP_SECONDS, FORMATS
from jobs.sessionize.io import InputError, check_path_text
from jobs.sessionize.job import EventsOptions, SessionizeError, run
from jobs.sessionize.transforms import SessionRules


def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# Spark's own log to a file: a failing task logs its Java stack trace several times over
LOG4J2 = """rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
"""


def _spark_log_conf(path: Path, conf: dict[str, str]) -> dict[str, str]:
    """``conf`` plus the driver option that sends Spark's JVM log to ``path`` (only effective when this
    process starts the JVM, not under spark-submit)."""
    props = path.with_name(path.name + ".log4j2.properties")
    props.write_text(LOG4J2.format(path=path), encoding="utf-8")
    option = f"-Dlog4j2.configurationFile={props.as_uri()}"
    java = " ".join(filter(None, [conf.get("spark.driver.extraJavaOptions", ""), option]))
    return {**conf, "spark.driver.extraJavaOptions": java}


def _delimiter(text: str) -> str:
    value = {"tab": "\t", "comma": ",", "space": " "}.get(text.lower())
    return value if value is not None else codecs.decode(text, "unicode_escape")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.sessionize",
        description="Sessionize raw interaction logs into train/test Parquet splits "
        "(docs/design.md §2-§3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the raw input")
    parser.add_argument(
        "--input", required=True, action="append", dest="inputs", metavar="PATH",
        help="input file, folder or glob; repeat for several (gzip is fine); ties in time keep this order",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="output folder (replaced atomically)")
    parser.add_argument(
        "--session-gap-seconds", type=_finite, default=None,
        help=f"a gap larger than this starts a new session (default per format: {DEFAULT_GAP_SECONDS})",
    )  # fmt: skip
    parser.add_argument(
        "--run-date", default=None, metavar="YYYY-MM-DD",
        help="leave out (and count) events after the end of this UTC day; default: keep all",
    )  # fmt: skip
    parser.add_argument(
        "--max-bad-fraction", type=_finite, default=0.01,
        help="fail when more than this fraction of the raw rows is malformed (quarantined)",
    )  # fmt: skip
    parser.add_argument(
        "--master", default=None,
        help="Spark master URL, e.g. local[2]; default: what spark-submit or the environment gives",
    )  # fmt: skip
    parser.add_argument(
        "--conf", action="append", type=_conf_pair, default=[], metavar="KEY=VALUE",
        help="extra Spark setting, repeatable (e.g. spark.driver.memory=8g)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO", help="Python logging level")
    parser.add_argument(
        "--metrics", default=None, metavar="FILE",
        help="write the run's Spark job count and per-phase seconds and jobs to this JSON file",
    )  # fmt: skip
    parser.add_argument(
        "--spark-log", default=None, metavar="FILE",
        help="file for Spark's own (JVM) log when this command starts Spark; default: a file in the "
        "temporary folder, removed after a successful run and named in the error otherwise",
    )  # fmt: skip

    rules = parser.add_argument_group("sessionization rules (the documented defaults, docs/design.md §3.1)")
    for f in fields(SessionRules):
        if f.name == "session_gap_seconds":
            continue
        kind = _finite if isinstance(f.default, float) else type(f.default)
        rules.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"])

    events = parser.add_argument_group("events format options")
    defaults = EventsOptions()
    events.add_argument("--user-col", default=defaults.user_col, help="column with the user key")
    events.add_argument("--item-col", default=defaults.item_col, help="column with the item key")
    events.add_argument(
        "--time-col", default=defaults.time_col, help="column with the time (epoch s or ISO-8601)"
    )
    events.add_argument("--item-name-col", default=None, help="optional column with the item's display name")
    events.add_argument(
        "--input-format", choices=("auto", "text", "parquet"), default=defaults.input_format,
        help="delimited text or Parquet; auto = parquet when every input ends in .parquet",
    )  # fmt: skip
    events.add_argument(
        "--delimiter", type=_delimiter, default=defaults.delimiter,
        help="field separator of text input; escapes such as '\\t' or the words tab/comma/space work",
    )  # fmt: skip
    events.add_argument(
        "--no-header", dest="header", action="store_false",
        help="text files have no header line (name the columns with --column-names)",
    )  # fmt: skip
    events.add_argument(
        "--column-names", default=None,
        help="comma-separated column names of header-less text (default: user,item,time columns)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    format_options = {}
    if args.format == "events":
        format_options = {
            "user_col": args.user_col,
            "item_col": args.item_col,
            "time_col": args.time_col,
            "item_name_col": args.item_name_col,
            "input_format": args.input_format,
            "delimiter": args.delimiter,
            "header": args.header,
            "column_names": tuple(args.column_names.split(",")) if args.column_names else None,
        }
    try:
        for path in args.inputs:
            check_path_text("--input", path)
        check_path_text("--output", args.output)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0.0 <= args.max_bad_fraction <= 1.0:
        parser.error(f"--max-bad-fraction must be in [0, 1], got {args.max_bad_fraction}")
    try:
        rules = SessionRules(
            **{f.name: getattr(args, f.name) for f in fields(SessionRules) if f.name != "session_gap_seconds"}
        )
        if args.session_gap_seconds is not None:
            SessionRules(session_gap_seconds=args.session_gap_seconds)
    except ValueError as exc:
        parser.error(str(exc))

    # starts a JVM: only after the arguments are known to be good
    from jobs.spark import batch_conf, build_spark, input_bytes

    conf = dict(args.conf)
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # this process starts the JVM: settings sized to the input
        conf = {**batch_conf(input_bytes(args.inputs)), **conf}
    spark_log = None
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # not under spark-submit: this process starts the JVM
        spark_log = Path(args.spark_log or Path(tempfile.gettempdir()) / f"thrnn-sessionize-{os.getpid()}.spark.log")
        conf = _spark_log_conf(spark_log.absolute(), conf)
        if not sys.stderr.isatty():  # the progress bar is for terminals; in a log it is noise
            conf.setdefault("spark.ui.showConsoleProgress", "false")
    logger = logging.getLogger("jobs.sessionize")
    t0 = time.monotonic()
    spark = build_spark("thrnn-sessionize", master=args.master, conf=conf)
    where = f" (Spark's log: {spark_log})" if spark_log is not None else ""
    metrics: dict = {"session_start_seconds": round(time.monotonic() - t0, 3)}
    try:
        stats = run(
            spark, args.format, args.inputs, args.output,
            session_gap_seconds=args.session_gap_seconds, run_date=args.run_date,
            max_bad_fraction=args.max_bad_fraction, rules=rules, metrics=metrics, **format_options,
        )  # fmt: skip
    except (InputError, ValueError) as exc:
        logger.error("%s%s", exc, where)
        return 2
    except SessionizeError as exc:
        logger.error("refusing to publish: %s", exc)
        return 3
    finally:
        spark.stop()
    if spark_log is not None and args.spark_log is None:  # a default log of a good run is not kept
        for path in (spark_log, spark_log.with_name(spark_log.name + ".log4j2.properties")):
            path.unlink(missing_ok=True)
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    json.dump(stats, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
