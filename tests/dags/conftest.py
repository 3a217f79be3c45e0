"""Airflow for the DAG tests: a private AIRFLOW_HOME with a migrated SQLite metadata database.

The environment is set when this file is imported, before any test imports Airflow (Airflow reads
its configuration once, at import).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW_HOME = Path(os.environ.get("THRNN_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="thrnn-airflow-"))

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(AIRFLOW_ENV)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Run ``airflow db migrate`` once per test session (takes a while)."""
    marker = AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        env = {**os.environ, **AIRFLOW_ENV}
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       capture_output=True, timeout=600)
        marker.touch()
    return AIRFLOW_HOME
