"""DAG integrity: it imports, parsing touches no database/connection and nothing heavy, policy, graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from thrnn.config import PRESETS
from thrnn.pipeline.params import PARAM_SPECS, TRAIN_PARAMS, train_param_spec
from thrnn.pipeline.settings import PipelineSettings

from .conftest import AIRFLOW_ENV, DAGS, REPO

pytestmark = pytest.mark.airflow  # parses the DAG with Airflow

@pytest.fixture(scope="module")
def dagbag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models import DagBag
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["thrnn_nightly"]  # get_dag() would query the metadata DB


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == ["thrnn_nightly"]


def test_schedule_and_policy(dag):
    # once a day at a fixed time; nights never overlap and past nights run only when asked for
    minute, hour, *rest = dag.timetable.expression.split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"], dag.timetable.expression
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and dag.dag_id in dag.doc_md
    # every task retries as the deployment settings say, with a growing back-off
    settings = PipelineSettings.from_env()
    for t in dag.tasks:
        assert t.retries == settings.retries, t.task_id
        assert t.retry_exponential_backoff and t.retry_delay == timedelta(seconds=settings.retry_delay), t.task_id


def test_task_graph_is_one_chain_of_the_task_functions(dag):
    """Each task is the function of thrnn.pipeline.tasks of its name, handing its state (thrnn.pipeline.states)
    to the next, in one chain from the first task to the last."""
    from thrnn.pipeline import tasks
    from thrnn.pipeline.states import STATES

    assert set(dag.task_ids) == set(STATES) and all(callable(getattr(tasks, t)) for t in dag.task_ids)
    (first,) = [t for t in dag.tasks if not t.upstream_task_ids]
    chain = [first.task_id]
    while dag.get_task(chain[-1]).downstream_task_ids:
        (nxt,) = dag.get_task(chain[-1]).downstream_task_ids
        chain.append(nxt)
    assert chain == list(STATES)  # every task once, in the order the states are handed on


def test_every_param_has_type_title_description(dag):
    assert list(dag.params.keys()) == list(PARAM_SPECS)
    for name in PARAM_SPECS:
        param = dag.params.get_param(name)
        assert param.schema["type"] and param.schema["title"] and len(param.description) > 20, name


def test_training_params_are_the_derived_trainconfig_fields(dag):
    for name in TRAIN_PARAMS:
        param = dag.params.get_param(name)
        assert param.value is None, name  # empty = the preset's value
        assert {**param.schema, "description": param.description} == {
            k: v for k, v in train_param_spec(name).items() if k != "default"}, name
    # the defaults (null everywhere, null in every enum) pass Airflow's own schema validation
    resolved = dag.params.validate()
    assert all(resolved[name] is None for name in (*TRAIN_PARAMS, "preset"))


def test_doc_lists_the_presets_and_the_layering(dag):
    for preset in PRESETS:
        assert f"`{preset}`" in dag.doc_md, preset
    assert "TrainConfig defaults < preset < given params" in dag.doc_md


def _parse_in_subprocess(extra_env: dict[str, str]) -> dict:
    """Import the DAG file in a fresh interpreter whose metadata DB cannot be reached."""
    code = f"""
import json, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
queries = []
event.listen(Engine, "before_cursor_execute", lambda *a, **k: queries.append(a[2]))
sys.path.insert(0, {str(DAGS)!r})
import thrnn_nightly
dag = thrnn_nightly.thrnn_nightly() if callable(getattr(thrnn_nightly, "thrnn_nightly", None)) else None
heavy = sorted(m for m in ("torch", "pyspark", "mlflow", "duckdb", "psycopg", "pandas") if m in sys.modules)
train = dag.get_task("train")
print(json.dumps({{"queries": queries, "heavy": heavy, "queue": train.queue, "pool": train.pool}}))
"""
    env = {**os.environ, **AIRFLOW_ENV, **extra_env,
           # any query at parse time would fail: the database file cannot exist
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent-dir/airflow.db"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parsing_queries_nothing_and_imports_nothing_heavy():
    result = _parse_in_subprocess({"THRNN_TRAIN_QUEUE": "", "THRNN_TRAIN_POOL": ""})
    assert result["queries"] == []
    assert result["heavy"] == []
    assert result["queue"] == "default"
    assert result["pool"] == "default_pool"


def test_train_goes_to_the_gpu_queue_and_pool_when_configured():
    result = _parse_in_subprocess({"THRNN_TRAIN_QUEUE": "gpu", "THRNN_TRAIN_POOL": "gpu_pool"})
    assert (result["queue"], result["pool"]) == ("gpu", "gpu_pool")
