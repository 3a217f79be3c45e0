"""docker/docker-compose.yaml and the local production shape (thrnn/pipeline/cluster.py) describe the same
deployment: the same services, commands, queues, pool, databases and settings. Only what is per host
differs (addresses, folders, sizes, listed in ``cluster.LOCAL_ONLY``); the cluster test runs the local
one, so this keeps the compose file honest without a Docker engine. Nothing is started here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from thrnn.pipeline import cluster as CL

STATE = Path("/srv/thrnn-cluster")
PORTS = CL.Ports(postgres=15432, redis=16379, mlflow=15000, spark_master=17077, spark_master_ui=18080,
                 spark_worker_ui=18081, airflow_api=18082, worker_log_default=18793, worker_log_gpu=18794,
                 trigger_log=18794 + 1)
SECRETS = CL.Secrets(postgres_password="local-pg-secret", jwt_secret="local-jwt-secret", admin_password="x")
# where each service listens: here, and in the compose network
ADDRESSES = {
    f"{CL.HOST}:{PORTS.postgres}": "postgres:5432",
    f"{CL.HOST}:{PORTS.redis}": "redis:6379",
    f"{CL.HOST}:{PORTS.mlflow}": "mlflow:5000",
    f"{CL.HOST}:{PORTS.spark_master}": "spark-master:7077",
    f"{CL.HOST}:{PORTS.airflow_api}": "airflow-apiserver:8080",
}
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu")


def _expand(text: str) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR-default}`` with the defaults (docker/.env.example holds the
    same values)."""
    return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services = yaml.safe_load(CL.COMPOSE_FILE.read_text())["services"]
    return {name: _expand_all(svc) for name, svc in services.items()}


def _expand_all(value: Any) -> Any:
    if isinstance(value, str):
        return _expand(value)
    if isinstance(value, list):
        return [_expand_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_all(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def local() -> dict[str, CL.Service]:
    services = CL.topology(CL.Layout(STATE), PORTS, SECRETS, CL.Options())
    return {s.name: s for s in services}


def _as_compose(value: str) -> str:
    """A local setting written as the compose file writes it: its addresses, credentials and folders."""
    for here, there in ADDRESSES.items():
        value = value.replace(here, there)
    layout = CL.Layout(STATE)
    return (value.replace(SECRETS.postgres_password, "change-me").replace(SECRETS.jwt_secret, "change-me-too")
            .replace(str(layout.thrnn_home), "/opt/thrnn/var").replace(str(CL.REPO), "/opt/thrnn"))


def _command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def test_the_same_services(compose, local):
    assert sorted(compose) == sorted(local)


def test_the_airflow_services_have_the_same_environment(compose, local):
    for name in AIRFLOW_SERVICES:
        assert "THRNN_INPUT_PATHS" in compose[name]["environment"] and "THRNN_INPUT_PATHS" in local[name].env
        theirs = {k: str(v) for k, v in compose[name]["environment"].items() if k not in CL.LOCAL_ONLY}
        ours = {k: _as_compose(v) for k, v in local[name].env.items()
                if k.startswith(("AIRFLOW__", "THRNN_", "MLFLOW_")) and k not in CL.LOCAL_ONLY}
        # the GPU worker trains on cuda in the compose file; here on whatever the machine has
        if name == "airflow-worker-gpu":
            assert (theirs.pop("THRNN_DEVICE"), ours.pop("THRNN_DEVICE")) == ("cuda", "auto")
        assert ours == theirs, name


def test_the_settings_the_dag_reads(compose, local):
    env = {k: str(v) for k, v in compose["airflow-scheduler"]["environment"].items()}
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["THRNN_SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["THRNN_WAREHOUSE_URL"].startswith("postgresql://") and env["THRNN_WAREHOUSE_URL"].endswith(
        "@postgres:5432/warehouse")
    assert (env["THRNN_TRAIN_QUEUE"], env["THRNN_TRAIN_POOL"]) == (CL.GPU_QUEUE, CL.GPU_POOL)
    for key in ("THRNN_SPARK_MASTER", "THRNN_TRAIN_QUEUE", "THRNN_TRAIN_POOL", "MLFLOW_TRACKING_URI",
                "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__EXECUTOR"):
        assert _as_compose(local["airflow-scheduler"].env[key]) == env[key], key


def test_the_same_airflow_commands_and_queues(compose, local):
    for name in AIRFLOW_SERVICES:
        assert _command(compose[name]) == list(local[name].compose_command), name
    queues = {name: _command(compose[name])[_command(compose[name]).index("--queues") + 1]
              for name in ("airflow-worker", "airflow-worker-gpu")}
    assert queues == {"airflow-worker": "default", "airflow-worker-gpu": CL.GPU_QUEUE}


def test_the_same_init(compose, local):
    assert compose["airflow-init"]["entrypoint"] == "/bin/bash" == local["airflow-init"].argv[0]
    assert compose["airflow-init"]["command"] == ["-c", CL.INIT_SCRIPT] == list(local["airflow-init"].argv[1:])
    lines = [shlex.split(line) for line in CL.INIT_SCRIPT.splitlines()]
    assert lines == [["set", "-e"], ["airflow", "db", "migrate"],
                     ["airflow", "pools", "set", CL.GPU_POOL, "1", "training on the GPU worker"]]
    # every Airflow service starts after it, as compose's depends_on says
    for name in AIRFLOW_SERVICES[1:]:
        assert compose[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert "airflow-init" in local[name].after


def test_the_same_start_order(compose, local):
    for name, svc in local.items():
        theirs = compose[name].get("depends_on", {})
        assert sorted(theirs) == sorted(svc.after), name


def test_the_same_databases(compose, local):
    created = {compose["postgres"]["environment"]["POSTGRES_DB"]} | {
        s.split()[-1].lower() for s in CL._sql_statements(CL.POSTGRES_INIT_SQL.read_text())}
    urls = [v for svc in local.values() for v in (*svc.env.values(), *svc.argv) if "postgres" in v and "://" in v]
    used = {u.rsplit("/", 1)[1] for u in urls}
    assert created == used == {"airflow", "mlflow", "warehouse"}


def test_the_same_mlflow_server(compose, local):
    def options(argv: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i, arg in enumerate(argv):
            if arg.startswith("--"):
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                out[arg] = None if nxt is None or nxt.startswith("--") else nxt
        return out

    theirs = options(_command(compose["mlflow"]))
    ours = options([_as_compose(a) for a in local["mlflow"].argv])
    assert _command(compose["mlflow"])[:2] == ["mlflow", "server"]
    for flag in ("--host", "--port", "--workers", "--artifacts-destination"):  # per host
        theirs.pop(flag, None)
        ours.pop(flag, None)
    # the local server also answers to its local address
    assert ours.pop("--allowed-hosts").startswith(theirs.pop("--allowed-hosts") + ",")
    assert ours == theirs == {"--backend-store-uri": "postgresql+psycopg://thrnn:change-me@postgres:5432/mlflow",
                              "--serve-artifacts": None}
    assert {k: str(v) for k, v in compose["mlflow"]["environment"].items()} == CL.MLFLOW_SERVER_ENV


def test_the_same_spark_cluster(compose, local):
    for name in ("spark-master", "spark-worker"):
        theirs = _command(compose[name])
        assert theirs[0] == "spark-class" and Path(local[name].argv[0]).name == "spark-class"
        assert theirs[1:] == [_as_compose(a) for a in local[name].compose_command], name
    assert compose["spark-master"]["environment"]["SPARK_MASTER_HOST"] == "spark-master"
    assert local["spark-master"].env["SPARK_MASTER_HOST"] == CL.HOST
    assert set(compose["spark-worker"]["environment"]) <= set(local["spark-worker"].env)
