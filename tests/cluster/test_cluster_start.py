"""A start that fails half-way stops what it had started, and a cluster whose owner died is stopped by
its watcher: no process of the cluster is left either way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = [pytest.mark.timeout(300, method="thread")]

# A service that ignores SIGTERM, as MLflow's job consumers did: only SIGKILL ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def test_the_watcher_stops_the_cluster_of_a_dead_owner(tmp_path):
    from thrnn.pipeline.cluster import MARKER, Layout, _processes_of

    layout = Layout(tmp_path / "state")
    layout.logs.mkdir(parents=True)
    service = subprocess.Popen([sys.executable, "-c", STUBBORN], env={**os.environ, MARKER: str(layout.root)},
                               start_new_session=True)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        layout.state_file.write_text(json.dumps({"services": [
            {"name": "stub", "pid": service.pid, "created": psutil.Process(service.pid).create_time(),
             "stop_grace": 1.0, "url": ""}]}))
        watcher = subprocess.Popen([sys.executable, "-m", "thrnn.pipeline.cluster", "watch", "--state",
                                    str(layout.root), "--owner",
                                    f"{owner.pid}:{psutil.Process(owner.pid).create_time()}"])
        time.sleep(3)
        assert (service.poll(), watcher.poll()) == (None, None), "the owner lives: the cluster stays"
        owner.kill()
        owner.wait()
        assert watcher.wait(timeout=60) == 0
        assert service.wait(timeout=10) == -signal.SIGKILL
        assert _processes_of(layout.root) == []
        assert not layout.state_file.exists()
    finally:
        for proc in (service, owner):
            if proc.poll() is None:
                proc.kill()


@pytest.mark.cluster
@pytest.mark.slow
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
        cluster = Cluster(tmp_path / "state", ports=ports, echo=None, stop_with_caller=True)
        with pytest.raises(ClusterError, match="postgres"), cluster:
            pass
    # redis and the Spark master start beside PostgreSQL, before it fails
    assert {"postgres", "redis", "spark-master"} <= set(_started(cluster))
    assert _processes_of(cluster.layout.root) == []
    assert not cluster.layout.state_file.exists()
    assert cluster._watcher is None  # and its watcher is gone too


def _started(cluster) -> list[str]:
    return [p.name.removesuffix(".log") for p in cluster.layout.logs.glob("*.log") if p.name != "initdb.log"]
