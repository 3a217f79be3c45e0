"""The Spark session the sessionize task starts: the job command line's batch settings sized to the
input (no UI, C1 JIT for small inputs; jobs.spark.batch_conf), under the deployment's own settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from thrnn.pipeline.sessionizing import session_conf
from thrnn.pipeline.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[2]
C1 = "-XX:TieredStopAtLevel=1"


def test_a_small_local_input_gets_no_ui_and_the_c1_jit(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text("u\t2009-05-04T23:08:57Z\ta\tA\tt\tT\n")
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    assert session_conf(settings, [str(raw)], environ={}) == {
        "spark.ui.enabled": "false", "spark.driver.extraJavaOptions": C1,
        "spark.local.dir": str(tmp_path.resolve() / "spark-tmp"), "spark.sql.shuffle.partitions": "4"}


def test_the_deployment_settings_win_and_unknown_sizes_keep_the_default_jit(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text("x\n")
    settings = PipelineSettings.from_env({
        "THRNN_HOME": str(tmp_path), "THRNN_SPARK_MASTER": "spark://master:7077",
        "THRNN_SPARK_CONF": "spark.driver.extraJavaOptions=-Xss8m,spark.ui.enabled=true"})
    expected = {"spark.ui.enabled": "true", "spark.driver.extraJavaOptions": "-Xss8m",
                "spark.local.dir": str(tmp_path.resolve() / "spark-tmp")}
    assert session_conf(settings, [str(raw)], environ={}) == expected
    remote = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    assert session_conf(remote, ["s3a://bucket/raw.tsv"], environ={}) == {  # size unknown: default JIT
        "spark.ui.enabled": "false", "spark.local.dir": str(tmp_path.resolve() / "spark-tmp"),
        "spark.sql.shuffle.partitions": "4"}


def test_under_spark_submit_only_the_deployment_settings(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text("x\n")
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    # spark-submit started the JVM with its own command line: JVM options set here would not apply
    assert session_conf(settings, [str(raw)], environ={"PYSPARK_GATEWAY_PORT": "40000"}) == \
        settings.spark_settings()


@pytest.mark.spark
def test_the_session_the_task_starts_runs_its_jvm_with_the_c1_jit(tmp_path):
    """In a process of its own (as an Airflow task runs), no session active: the JVM gets the flag."""
    raw = tmp_path / "raw.tsv"
    raw.write_text("u\t2009-05-04T23:08:57Z\ta\tA\tt\tT\n")
    code = textwrap.dedent(f"""
        import json
        from thrnn.pipeline.sessionizing import spark_session
        from thrnn.pipeline.settings import PipelineSettings

        settings = PipelineSettings.from_env({{"THRNN_HOME": {str(tmp_path)!r}, "THRNN_SPARK_MASTER": "local[1]"}})
        with spark_session(settings, "thrnn-test-session", [{str(raw)!r}]) as spark:
            args = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
            print(json.dumps({{"jvm_args": args, "ui": spark.sparkContext.getConf().get("spark.ui.enabled")}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert C1 in seen["jvm_args"] and seen["ui"] == "false"
