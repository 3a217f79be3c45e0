"""The production shape (docker/docker-compose.yaml) as local processes, started once for the module.

``cluster`` is :class:`thrnn.pipeline.cluster.Cluster`, the module behind ``make cluster-up``: the same
services, the same environment, only addresses, folders and sizes are this machine's. Skipped with the
reason when the machine lacks PostgreSQL, Redis or Java (``.ci/run`` installs the first two).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The night the test runs and the generator's small log before it (as tests/dags/test_dag_e2e.py).
RUN_DATE = "2025-12-30"
DATASET = "tiny"


@pytest.fixture(scope="module")
def raw_log(tmp_path_factory) -> Path:
    from synth import generate

    raw = tmp_path_factory.mktemp("raw") / "lastfm.tsv"
    generate("lastfm", 2500, raw, seed=3, users=20, start="2025-12-01", days=31)
    return raw


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from thrnn.pipeline.cluster import Cluster, Options, missing_requirements

    problems = missing_requirements()
    if problems:
        pytest.skip("cannot start the local production shape: " + "; ".join(problems))
    options = Options(extra_env={
        # a failing task fails the test at once instead of after minutes of back-off
        "THRNN_TASK_RETRIES": "0",
        # a tiny night: Spark's 200 shuffle partitions would cost minutes on 2 cores (docs/operations.md)
        "THRNN_SPARK_CONF": "spark.sql.shuffle.partitions=4",
    })
    state = tmp_path_factory.mktemp("cluster")
    # stopped with every process on leaving the block, also on failure; and by its watcher if this
    # process dies first (a hard timeout)
    with Cluster(state, options, echo=print, stop_with_caller=True) as running:
        yield running
