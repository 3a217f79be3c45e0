"""One night of ``thrnn_nightly`` on the production shape, run for real: triggered through the Airflow REST
API with params (as the UI's trigger form sends them), scheduled by the CeleryExecutor over Redis, the
train task on the ``gpu`` queue's worker, sessionize as an application of the Spark standalone master,
the model in the MLflow tracking server (PostgreSQL store, proxied artifacts) with alias ``champion``,
the tables and ``latest_*`` views in PostgreSQL. Then the cluster stops with every process.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import DATASET, RUN_DATE

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800, method="thread")]

DAG_ID = "thrnn_nightly"
RUN_ID = f"cluster-test-{RUN_DATE}"
RUN_DAY = dt.date.fromisoformat(RUN_DATE)
TASKS = ("sessionize", "validate", "train", "evaluate", "register", "score", "publish", "check", "promote",
         "backtest")
TOP_K = 5
# tiny training settings (as tests/dags/test_dag_e2e.py); baseline_tolerance 1 lets the one-epoch model
# past the baselines, so with no champion yet the night's model becomes champion by the normal gate
CONF = {"dataset": DATASET, "format": "lastfm", "epochs": 1, "item_embedding": 8, "user_embedding": 4,
        "gap_embedding": 3, "top_k": TOP_K, "batch_size": 16, "baseline_tolerance": 1.0}
RUN_TIMEOUT_S = 1200


class Api:
    """Airflow 3's public REST API with a JWT from /auth/token (the Simple auth manager's admin)."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        status, body = self.call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)
        assert status in (200, 201), f"POST /auth/token: {status} {body}"
        self.token = body["access_token"]

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")[:2000]

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body


def _task_log(cluster, task_id: str) -> str:
    logs = sorted((cluster.layout.airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id={task_id}/*.log"))
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-40:]) if logs else "(no task log)"


def _service_log(cluster, name: str, n: int = 30) -> str:
    path = cluster.layout.log(name)
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _workloads(cluster, worker: str) -> list[str]:
    """task_ids of the workloads a Celery worker received (its log line for each)."""
    text = cluster.layout.log(worker).read_text(errors="replace")
    return re.findall(r"Executing workload in Celery: .*?task_id='([a-z_]+)', dag_id='thrnn_nightly', "
                      rf"run_id='{re.escape(RUN_ID)}'", text)


@pytest.fixture(scope="module")
def night(cluster, raw_log) -> dict[str, Any]:
    """The night triggered through the REST API and waited for: (api, run, task instances)."""
    api = Api(cluster.airflow_url, cluster.admin_password)
    deadline = time.monotonic() + 240  # the dag-processor parses dags/ once it is up
    status, dag = api.call("GET", f"/api/v2/dags/{DAG_ID}")
    while status != 200 and time.monotonic() < deadline:
        time.sleep(2)
        status, dag = api.call("GET", f"/api/v2/dags/{DAG_ID}")
    assert status == 200, f"{DAG_ID} not parsed: {status} {dag}\n{_service_log(cluster, 'airflow-dag-processor')}"
    assert dag["is_paused"], "new DAGs start paused"
    assert api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})[0] == 200

    conf = {**CONF, "input_paths": [str(raw_log)]}
    status, run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {
        "dag_run_id": RUN_ID, "logical_date": f"{RUN_DATE}T02:00:00+00:00", "conf": conf})
    assert status == 200, f"trigger: {status} {run}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while run["state"] not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(5)
        run = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{RUN_ID}")
    tis = {t["task_id"]: t for t in
           api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances")["task_instances"]}
    states = {k: t["state"] for k, t in tis.items()}
    bad = [k for k in TASKS if states.get(k) != "success"]
    detail = "\n".join(f"--- {k} ---\n{_task_log(cluster, k)}" for k in bad[:2])
    assert run["state"] == "success", (f"run {run['state']}: {states}\n{detail}\n--- scheduler ---\n"
                                       f"{_service_log(cluster, 'airflow-scheduler')}")
    print(f"[cluster test] run {run['start_date']} .. {run['end_date']}: " + ", ".join(
        f"{k} {tis[k]['duration']:.0f} s" for k in TASKS))
    return {"api": api, "run": run, "tis": tis, "conf": conf}


def _state(cluster, task: str) -> dict[str, Any]:
    from thrnn.pipeline.settings import PipelineSettings

    settings = PipelineSettings.from_env(cluster.env)
    return json.loads((settings.run_paths(DATASET, RUN_DAY).state / f"{task}.json").read_text())


def test_the_run_is_the_one_triggered_with_its_params(cluster, night):
    api, run = night["api"], night["run"]
    assert run["conf"] == night["conf"]
    assert run["logical_date"].startswith(f"{RUN_DATE}T02:00:00")
    # the cron schedule is off on the local cluster: unpausing started no run of its own
    runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [RUN_ID]
    assert sorted(night["tis"]) == sorted(TASKS)


def test_train_ran_on_the_gpu_worker_and_the_rest_on_the_default_one(cluster, night):
    tis = night["tis"]
    assert (tis["train"]["queue"], tis["train"]["pool"]) == ("gpu", "gpu")
    assert {k: (t["queue"], t["pool"]) for k, t in tis.items() if k != "train"} == {
        k: ("default", "default_pool") for k in TASKS if k != "train"}
    assert _workloads(cluster, "airflow-worker-gpu") == ["train"]
    assert sorted(_workloads(cluster, "airflow-worker")) == sorted(k for k in TASKS if k != "train")
    # THRNN_DEVICE of the gpu worker is auto here: the GPU when the machine has one, else the CPU
    import torch

    history = json.loads((Path(_state(cluster, "train")["run_dir"]) / "history.json").read_text())
    assert history["device"].split()[0] == ("cuda" if torch.cuda.is_available() else "cpu"), history["device"]


def test_the_task_logs_of_both_workers_are_readable_through_the_api(cluster, night):
    # what the UI shows for a task instance: its log, whichever worker ran it
    for task in ("train", "sessionize"):
        body = night["api"].get(f"/api/v2/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances/{task}/logs/1")
        text = json.dumps(body["content"])
        assert "Done. Returned value was" in text, (task, text[-2000:])


def test_sessionize_ran_on_the_spark_master(cluster, night):
    status, body = _get_json(f"{cluster.spark_master_ui}/json/")
    assert status == 200
    apps = [a for a in body["completedapps"] + body["activeapps"]
            if a["name"] == f"thrnn-sessionize-{DATASET}-{RUN_DATE}"]
    assert len(apps) == 1, [a["name"] for a in body["completedapps"] + body["activeapps"]]
    assert apps[0]["state"] == "FINISHED" and apps[0]["cores"] >= 1
    assert body["aliveworkers"] == 1
    # its output is the split the next tasks read
    import pandas as pd

    sessionized = _state(cluster, "sessionize")
    assert sessionized["stats"]["users"] == len(pd.read_parquet(Path(sessionized["data_dir"]) / "users"))


def test_the_model_is_champion_in_the_mlflow_server(cluster, night):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow_url, registry_uri=cluster.mlflow_url)
    champion = client.get_model_version_by_alias(f"thrnn-{DATASET}", "champion")
    trained, registered = _state(cluster, "train"), _state(cluster, "register")
    assert (int(champion.version), champion.run_id) == (1, trained["mlflow_run_id"]) == (
        int(registered["version"]), registered["run_id"])
    # artifacts went through the server (--serve-artifacts) into its destination folder
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    stored = {p.name for p in cluster.layout.mlartifacts.rglob("*") if p.is_file()}
    assert {"report.md", "history.json", "config.json"} <= stored, sorted(stored)[:20]
    assert {"recall_at_20", "mae_hours"} <= set(run.data.metrics)
    # the server answers to its compose service name (the Airflow containers' Host header) ...
    assert _get_json(f"{cluster.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5",
                     {"Host": "mlflow:5000"})[0] == 200
    # ... and still refuses other names (the Host check stays on)
    assert _get_json(f"{cluster.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5",
                     {"Host": "attacker.example"})[0] == 403


def test_the_night_is_in_postgresql_with_the_latest_views(cluster, night):
    import pandas as pd
    import psycopg

    from thrnn.io import read_split
    from thrnn.pipeline.settings import PipelineSettings

    settings = PipelineSettings.from_env(cluster.env)
    users = read_split(settings.run_paths(DATASET, RUN_DAY).data).users
    with psycopg.connect(cluster.warehouse_url) as conn:
        kinds = dict(conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public'").fetchall())
        assert {k: kinds.get(k) for k in ("recommendations", "churn_risk", "model_runs", "latest_recommendations",
                                          "latest_churn_risk", "at_risk_users")} == {
            "recommendations": "BASE TABLE", "churn_risk": "BASE TABLE", "model_runs": "BASE TABLE",
            "latest_recommendations": "VIEW", "latest_churn_risk": "VIEW", "at_risk_users": "VIEW"}

        def count(sql: str) -> int:
            return conn.execute(sql, (DATASET, RUN_DAY)).fetchone()[0]

        night_rows = "WHERE dataset = %s AND run_date = %s"
        assert count(f"SELECT COUNT(*) FROM churn_risk {night_rows}") == len(users)
        assert count(f"SELECT COUNT(DISTINCT user_key) FROM churn_risk {night_rows}") == len(users)
        assert count(f"SELECT COUNT(*) FROM recommendations {night_rows}") == len(users) * TOP_K
        assert count(f"SELECT COUNT(*) FROM latest_churn_risk {night_rows}") == len(users)
        assert count(f"SELECT COUNT(*) FROM latest_recommendations {night_rows}") == len(users) * TOP_K
        columns, rows = _fetch(conn, f"SELECT * FROM model_runs {night_rows}")
        row = pd.DataFrame(rows, columns=columns)
    assert len(row) == 1
    got = row.iloc[0]
    assert (int(got["model_version"]), bool(got["promoted"]), int(got["scored_with_version"])) == (1, True, 1)
    assert got["recommendations_source"] == f"thrnn-{DATASET}/1"
    # the state says where it published, without the password
    assert _state(cluster, "publish")["warehouse"] == re.sub(r":[^:@/]+@", ":***@", cluster.warehouse_url)


def test_airflow_and_mlflow_keep_their_state_in_postgresql(cluster, night):
    import psycopg

    base = cluster.warehouse_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/airflow") as conn:
        assert conn.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
                            (DAG_ID, RUN_ID)).fetchone() == ("success",)
    with psycopg.connect(f"{base}/mlflow") as conn:
        assert conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                            (f"thrnn-{DATASET}",)).fetchall() == [("champion", 1)]


def test_a_second_start_on_its_folder_is_refused_and_leaves_it_running(cluster, night):
    from thrnn.pipeline.cluster import Cluster, ClusterError, _processes_of

    before = sorted(p.pid for p in _processes_of(cluster.layout.root))
    second = Cluster(cluster.layout.root, echo=None)
    with pytest.raises(ClusterError, match="already runs"):
        second.start()
    assert second.stop() == []
    assert sorted(p.pid for p in _processes_of(cluster.layout.root)) == before
    assert _get_json(f"{cluster.airflow_url}/api/v2/monitor/health")[0] == 200


def test_the_cluster_stops_with_every_process(cluster, night):
    from thrnn.pipeline.cluster import _processes_of

    assert len(_processes_of(cluster.layout.root)) >= 11  # at least one process per service
    cluster.stop()
    assert _processes_of(cluster.layout.root) == []
    assert _get_json(f"{cluster.airflow_url}/api/v2/monitor/health")[0] == 0
    assert _get_json(f"{cluster.mlflow_url}/health")[0] == 0
    assert not cluster.layout.state_file.exists()


def _get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    from thrnn.pipeline.cluster import http_get

    status, body = http_get(url, headers=headers)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body


def _fetch(conn, sql: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(sql, (DATASET, RUN_DAY))
    return [d.name for d in cur.description], cur.fetchall()
