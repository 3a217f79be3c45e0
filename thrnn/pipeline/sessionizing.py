"""The sessionize task's Spark side: the session it runs in and the job call (``jobs.sessionize``)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .params import RunParams
from .settings import PipelineSettings, RunPaths


def input_paths(params: RunParams, environ: Mapping[str, str] | None = None) -> list[str]:
    """The param ``input_paths``, else ``THRNN_INPUT_PATHS`` (comma-separated); refused when both are empty."""
    env = os.environ if environ is None else environ
    paths = list(params.input_paths) or [p.strip() for p in env.get("THRNN_INPUT_PATHS", "").split(",") if p.strip()]
    if not paths:
        raise ValueError("no input: set the DAG param input_paths or THRNN_INPUT_PATHS")
    return paths


def session_conf(settings: PipelineSettings, inputs: list[str], environ: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    """Spark settings of a session the task starts: when this process starts the JVM (not under
    spark-submit, which gives its own), the batch settings sized to the input, as the job's command line
    uses them (no UI; C1 JIT only up to ``jobs.spark.SMALL_INPUT_BYTES``, docs/sessionize_benchmark.md);
    ``settings.spark_settings()`` (THRNN_SPARK_CONF included) win over them."""
    from jobs.spark import batch_conf, input_bytes

    env = os.environ if environ is None else environ
    sized = {} if env.get("PYSPARK_GATEWAY_PORT") else batch_conf(input_bytes(inputs))
    return {**sized, **settings.spark_settings()}


@contextmanager
def spark_session(settings: PipelineSettings, app_name: str, inputs: list[str]) -> Iterator[Any]:
    """The active Spark session (e.g. a test fixture's, left running) or a new one of
    :func:`session_conf`, stopped after."""
    from pyspark.sql import SparkSession

    from jobs.spark import build_spark

    existing = SparkSession.getActiveSession()
    spark = existing or build_spark(app_name=app_name, master=settings.spark_master,
                                    conf=session_conf(settings, inputs))
    try:
        yield spark
    finally:
        if existing is None:
            spark.stop()


def sessionize_job(spark: Any, params: RunParams, inputs: list[str], paths: RunPaths,
                   run_date: dt.date) -> dict[str, Any]:
    """``jobs.sessionize.run``: raw logs -> Parquet splits in ``<run>/data``; returns its stats.json."""
    from jobs.sessionize import run

    return run(spark, params.format, inputs, str(paths.data), session_gap_seconds=params.session_gap_seconds,
               run_date=run_date, max_bad_fraction=params.max_bad_fraction)
