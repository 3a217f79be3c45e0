"""Building the SparkSession for the pipeline's Spark jobs and tests.

Under ``spark-submit`` the master and most settings come from the submit command, so nothing here
hard-codes a master: ``master=None`` leaves it to spark-submit (or to PySpark's local default when
run as a plain Python process).
"""

from __future__ import annotations

import logging
import os

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
