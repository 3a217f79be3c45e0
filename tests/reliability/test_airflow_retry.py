"""A transient task failure retried by Airflow, for real: ``dag.test()`` of ``thrnn_nightly``.

``dag.test()`` in Airflow 3 honours retries: a failed try goes to ``up_for_retry`` and its loop runs
the task again once ``retry_delay`` (with the DAG's exponential back-off) has passed. Here the raw
input of the night is not there at the first try of ``sessionize`` (a mount not yet up, a late
upload) and arrives while the task waits for its retry; the second try sessionizes it. The delay is
the deployment knob ``THRNN_TASK_RETRY_DELAY`` (1 s here instead of 2 min); the other tasks are
marked successful (``mark_success_pattern``) as they are covered by ``tests/dags/test_dag_e2e.py``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import threading
import time

import pytest

from contract import columns as C
from tests.dags.conftest import DAGS, airflow_db  # noqa: F401 - fixture; sets the Airflow environment

pytestmark = [pytest.mark.airflow, pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]

# a night no other test of the shared Airflow database runs (tests/dags use 2025-12-29..31)
DAY = dt.date(2025, 11, 20)


def _load_dag():
    """A fresh copy of the DAG file: its settings (retries, delay) are read at import."""
    spec = importlib.util.spec_from_file_location("thrnn_nightly_retry", DAGS / "thrnn_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.thrnn_nightly()


def _sessionize_state(run_id: str | None = None) -> tuple[str | None, int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (session.query(TaskInstance)
              .filter(TaskInstance.dag_id == "thrnn_nightly", TaskInstance.task_id == "sessionize",
                      TaskInstance.logical_date == dt.datetime.combine(DAY, dt.time(2), tzinfo=dt.UTC))
              .one_or_none())
        return (str(ti.state) if ti is not None and ti.state is not None else None,
                ti.try_number if ti is not None else 0)


def test_a_task_that_fails_once_succeeds_on_its_retry(airflow_db, spark, tmp_path, monkeypatch):  # noqa: F811
    from synth import generate

    home = tmp_path / "home"
    raw = tmp_path / "incoming" / "lastfm.tsv"
    staged = tmp_path / "upload.tsv"
    generate("lastfm", 600, staged, seed=3, users=8, start="2025-10-21", days=29)
    for key, value in {"THRNN_HOME": str(home), "THRNN_DEVICE": "cpu", "THRNN_TASK_RETRIES": "1",
                       # long enough for the watcher to see up_for_retry on a busy machine
                       "THRNN_TASK_RETRY_DELAY": "5",
                       "THRNN_SPARK_CONF": "spark.sql.shuffle.partitions=2"}.items():
        monkeypatch.setenv(key, value)
    dag = _load_dag()
    assert dag.task_dict["sessionize"].retries == 1

    seen: list[tuple[str | None, int]] = []

    def arrive_when_up_for_retry() -> None:  # the upload lands between the two tries
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            state = _sessionize_state()
            if state[0] in ("up_for_retry", "TaskInstanceState.UP_FOR_RETRY"):
                seen.append(state)
                raw.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, raw)
                return
            time.sleep(0.2)

    # Airflow imports its models lazily: import them here first, or the watcher's first query and the
    # main thread's imports deadlock on the import lock
    assert _sessionize_state() == (None, 0)
    watcher = threading.Thread(target=arrive_when_up_for_retry, daemon=True)
    watcher.start()
    dr = dag.test(logical_date=dt.datetime.combine(DAY, dt.time(2), tzinfo=dt.UTC),
                  run_conf={"dataset": "tiny", "format": "lastfm", "input_paths": [str(raw)]},
                  mark_success_pattern="^(?!sessionize$).*")
    watcher.join(5)
    assert seen and seen[0][1] == 1, seen  # the first try failed and was put up for retry
    assert str(dr.state) in ("success", "DagRunState.SUCCESS")
    state, tries = _sessionize_state()
    assert state in ("success", "TaskInstanceState.SUCCESS") and tries == 2
    stats = json.loads((home / "runs" / "tiny" / DAY.isoformat() / "data" / C.STATS_FILE).read_text())
    assert stats["raw_rows"] == 600 and stats["quarantined_rows"] == 0
