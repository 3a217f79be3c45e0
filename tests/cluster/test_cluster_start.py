"""A start that fails half-way stops what it had started: no process of the cluster is left."""

from __future__ import annotations

import socket

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


def test_a_failed_start_leaves_no_process(tmp_path):
    from thrnn.pipeline.cluster import HOST, Cluster, ClusterError, Ports, _processes_of, missing_requirements

    problems = missing_requirements()
    if problems:
        pytest.skip("cannot start the local production shape: " + "; ".join(problems))
    ports = Ports.free()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:  # PostgreSQL's port is taken
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((HOST, ports.postgres))
        taken.listen()
        cluster = Cluster(tmp_path / "state", ports=ports, echo=None)
        with pytest.raises(ClusterError, match="postgres"), cluster:
            pass
    # redis and the Spark master start beside PostgreSQL, before it fails
    assert {"postgres", "redis", "spark-master"} <= set(_started(cluster))
    assert _processes_of(cluster.layout.root) == []
    assert not cluster.layout.state_file.exists()


def _started(cluster) -> list[str]:
    return [p.name.removesuffix(".log") for p in cluster.layout.logs.glob("*.log") if p.name != "initdb.log"]
