"""The pieces of ``make demo`` that decide what runs: the next night, the Airflow login, the CLI."""

from __future__ import annotations

import datetime as dt
import json

from thrnn.pipeline import demo
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.settings import PipelineSettings

from .conftest import night_frames

FIRST = dt.date(2026, 2, 15)


def test_next_night_follows_the_newest_published_night(tmp_path):
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    assert demo.next_night(settings, FIRST) == FIRST  # no warehouse yet
    wh = W.connect(settings.warehouse)
    wh.publish("other", dt.date(2026, 3, 1), night_frames(dt.date(2026, 3, 1), dataset="other"))
    assert demo.next_night(settings, FIRST) == FIRST  # other datasets do not count
    for day in (FIRST, FIRST + dt.timedelta(days=1)):
        wh.publish(demo.DATASET, day, night_frames(day, dataset=demo.DATASET))
    assert demo.next_night(settings, FIRST) == dt.date(2026, 2, 17)


def test_airflow_password_is_created_once(tmp_path):
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    settings.airflow_dir.mkdir(parents=True)
    first = demo.airflow_password(settings)
    assert len(first) >= 12 and demo.airflow_password(settings) == first
    path = settings.airflow_dir / "simple_auth_manager_passwords.json.generated"
    assert json.loads(path.read_text()) == {"admin": first}
    assert path.stat().st_mode & 0o077 == 0


def test_airflow_env_points_at_the_repo_dags_and_a_sqlite_db(tmp_path):
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    env = demo.airflow_env(settings)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow/airflow.db"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(demo.REPO / "dags")
    assert env["THRNN_HOME"] == str(tmp_path)
