"""Building the SparkSession for the pipeline's Spark jobs and tests.

Under ``spark-submit`` the master and most settings come from the submit command, so nothing here
hard-codes a master: ``master=None`` leaves it to spark-submit (or to PySpark's local default when
run as a plain Python process).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Settings every job relies on; explicit ``conf`` entries win over them.
DEFAULT_CONF: dict[str, str] = {
    # All times in the pipeline are UTC; never depend on the machine's zone.
    "spark.sql.session.timeZone": "UTC",
    # Parquet timestamps as INT64 micros (UTC-adjusted) so pyarrow reads timestamp[us, tz=UTC].
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


def build_spark(app_name: str, master: str | None = None, conf: dict[str, str] | None = None) -> SparkSession:
    """Return a (possibly existing) SparkSession named ``app_name``.

    :param app_name: application name shown in the Spark UI and logs.
    :param master: e.g. ``local[2]`` or ``spark://host:7077``; ``None`` keeps what spark-submit or the
        environment gives (PySpark defaults to ``local[*]`` outside spark-submit).
    :param conf: extra Spark settings, applied after :data:`DEFAULT_CONF`.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    settings = {**DEFAULT_CONF, **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # getOrCreate may return a session started elsewhere: make the runtime SQL settings hold anyway.
    for key, value in settings.items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    log.info("Spark %s session %r on %s", spark.version, app_name, spark.sparkContext.master)
    return spark


# An input up to this size is a small night: Spark's fixed costs dominate its run (the generated
# lastfm log is ~128 MB per million events; docs/sessionize_benchmark.md).
SMALL_INPUT_BYTES = 256 * 2**20


def input_bytes(paths: list[str]) -> int | None:
    """Total size of local input files, folders (recursively) or globs; None when any is not local."""
    total = 0
    for path in paths:
        if "://" in path and not path.startswith("file:"):
            return None
        local = path.removeprefix("file://").removeprefix("file:")
        for match in glob.glob(local) if glob.has_magic(local) and not os.path.exists(local) else [local]:
            if os.path.isdir(match):
                total += sum(f.stat().st_size for f in Path(match).rglob("*") if f.is_file())
            elif os.path.isfile(match):
                total += os.path.getsize(match)
    return total


def batch_conf(size: int | None) -> dict[str, str]:
    """Settings for one batch run in a JVM of its own (the job's command line), sized to its input:

    - no Spark UI (nobody looks at it during a batch run; its server and listeners cost start time);
    - on a small input (``size`` up to :data:`SMALL_INPUT_BYTES`), the JVM's C1 compiler only: a
      short run otherwise spends a large share of its CPU compiling with C2 code it barely uses
      (measured in docs/sessionize_benchmark.md); large inputs keep the default tiered JIT.

    Only applies where the JVM is started with these settings (not under spark-submit, whose command
    gives its own); explicit settings win over them.
    """
    conf = {"spark.ui.enabled": "false"}
    if size is not None and size <= SMALL_INPUT_BYTES:
        conf["spark.driver.extraJavaOptions"] = "-XX:TieredStopAtLevel=1"
    return conf
