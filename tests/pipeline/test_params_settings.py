"""DAG params (validation with clear messages) and deployment settings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from thrnn.pipeline.params import PARAM_SPECS, ParamError, RunParams, param_defaults, validate_params
from thrnn.pipeline.settings import PipelineSettings, registered_model_name


def test_defaults_validate_to_the_dataclass_defaults():
    assert validate_params({}) == RunParams()
    assert validate_params(param_defaults()) == RunParams()
    assert set(PARAM_SPECS) == set(RunParams().to_dict())


def test_values_are_typed():
    p = validate_params({"epochs": 2.0, "horizons_hours": [12, 48, 96], "input_paths": ["a.tsv"],
                         "session_gap_seconds": 1800, "item_embedding": 16})
    assert p.epochs == 2 and isinstance(p.epochs, int)
    assert p.horizons_hours == (12.0, 48.0, 96.0)
    assert p.input_paths == ("a.tsv",)
    assert p.train_overrides()["item_embedding"] == 16
    assert "item_embedding" not in RunParams().train_overrides()  # None = per-dataset default
    assert "lr" not in RunParams().train_overrides()
    q = validate_params({"learning_rate": 0.002, "lr_schedule": "cosine", "tie_embeddings": True})
    o = q.train_overrides()
    assert (o["lr"], o["lr_schedule"], o["tie_embeddings"]) == (0.002, "cosine", True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": 0}, "param 'epochs' must be >= 1, got 0"),
        ({"epochs": "3"}, "param 'epochs' must be of type integer"),
        ({"epochs": True}, "param 'epochs' must be of type integer"),
        ({"epochs": 2.5}, "param 'epochs' must be of type integer"),
        ({"format": "csv"}, "param 'format' must be one of ['lastfm', 'reddit', 'events']"),
        ({"dataset": "Last FM"}, "param 'dataset' must match"),
        ({"dataset": "../etc"}, "param 'dataset' must match"),
        ({"gap_exponent": 0}, "param 'gap_exponent' must be > 0"),
        ({"gap_exponent": float("nan")}, "must be a finite number"),
        ({"horizons_hours": [24, 168]}, "param 'horizons_hours' must have 3 items, got 2"),
        ({"horizons_hours": [24, 24, 720]}, "must be strictly increasing"),
        ({"horizons_hours": [24, -1, 720]}, "param 'horizons_hours[1]' must be > 0"),
        ({"risk_thresholds": [0.7, 0.3]}, "must be increasing"),
        ({"loss_time": 0, "loss_rec": 0, "loss_first": 0}, "must not all be 0"),
        ({"input_paths": [""]}, "param 'input_paths[0]' must not be empty"),
        ({"input_paths": "a.tsv"}, "param 'input_paths' must be of type array"),
        ({"recall_tolerance": 1.5}, "param 'recall_tolerance' must be <= 1"),
        ({"max_bad_fraction": -0.1}, "param 'max_bad_fraction' must be >= 0"),
        ({"epoch": 3}, "unknown param(s) ['epoch']"),
        ({"lr_schedule": "step"}, "param 'lr_schedule' must be one of ['constant', 'cosine']"),
        ({"learning_rate": 0}, "param 'learning_rate' must be > 0"),
        ({"tie_embeddings": "yes"}, "param 'tie_embeddings' must be of type boolean"),
    ],
)
def test_bad_values_fail_with_a_clear_message(raw, message):
    with pytest.raises(ParamError) as err:
        validate_params(raw)
    assert message in str(err.value)


def test_settings_from_env_and_run_paths(tmp_path):
    s = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path), "THRNN_TRAIN_QUEUE": "gpu"})
    assert s.home == tmp_path.resolve()
    assert s.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert s.warehouse == f"duckdb://{tmp_path}/warehouse.duckdb"
    assert s.airflow_dir == tmp_path / "airflow"
    assert (s.train_queue, s.train_pool, s.spark_master, s.retries) == ("gpu", None, "local[*]", 2)
    p = s.run_paths("lastfm", dt.date(2026, 1, 2))
    assert p.root == tmp_path / "runs" / "lastfm" / "2026-01-02"
    assert p.data == p.root / "data" and p.train == p.root / "train" and p.scores == p.root / "scores"
    assert s.run_paths("lastfm", "2026-01-03").root != p.root
    with pytest.raises(ValueError):
        s.run_paths("lastfm", "2026-01-02/../../x")
    assert registered_model_name("reddit") == "thrnn-reddit"
    assert s.artifact_root == (tmp_path / "mlartifacts").as_uri()
    remote = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert (remote.tracking_uri, remote.artifact_root) == ("http://mlflow:5000", "")  # the server decides


def test_default_home_is_var_and_passwords_are_redacted():
    s = PipelineSettings.from_env({"THRNN_WAREHOUSE_URL": "postgresql://u:secret@db:5432/w"})
    assert s.home == Path("var").resolve()
    assert s.to_dict()["warehouse_url"] == "postgresql://u:***@db:5432/w"
    assert "secret" not in str(s.to_dict())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THRNN_WAREHOUSE_URL": "mysql://x"}, "must start with postgresql:// or duckdb:///"),
        ({"THRNN_DEVICE": "tpu"}, "THRNN_DEVICE must be auto, cpu or cuda"),
        ({"THRNN_TASK_RETRIES": "-1"}, "THRNN_TASK_RETRIES must be >= 0"),
    ],
)
def test_bad_settings_fail_clearly(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PipelineSettings.from_env(env)
