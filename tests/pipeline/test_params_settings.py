"""DAG params (validation with clear messages) and deployment settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from thrnn.config import FORMAT_PRESETS, PRESETS, TrainConfig, config_for
from thrnn.pipeline.params import (
    PARAM_SPECS,
    TRAIN_PARAMS,
    ParamError,
    RunParams,
    param_defaults,
    train_param_spec,
    validate_params,
)
from thrnn.pipeline.settings import PipelineSettings, parse_run_date, registered_model_name
from thrnn.pipeline.training import training_config

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def test_defaults_validate_to_the_dataclass_defaults():
    assert validate_params({}) == RunParams()
    assert validate_params(param_defaults()) == RunParams()
    assert set(PARAM_SPECS) == set(RunParams().to_dict())


def test_values_are_typed():
    p = validate_params({"epochs": 2.0, "horizons_hours": [12, 48, 96], "input_paths": ["a.tsv"],
                         "session_gap_seconds": 1800, "item_embedding": 16, "gap_exponent": 1})
    assert p.train["epochs"] == 2 and isinstance(p.train["epochs"], int)
    assert p.train["gap_exponent"] == 1.0 and isinstance(p.train["gap_exponent"], float)
    assert p.horizons_hours == (12.0, 48.0, 96.0)
    assert p.input_paths == ("a.tsv",)
    assert p.train_overrides() == {"epochs": 2, "item_embedding": 16, "gap_exponent": 1.0}
    q = validate_params({"lr": 0.002, "lr_schedule": "cosine", "tie_embeddings": False})
    assert q.train_overrides() == {"lr": 0.002, "lr_schedule": "cosine", "tie_embeddings": False}
    assert validate_params(q.to_dict()) == q  # to_dict round-trips, one entry per DAG param


def test_train_overrides_hold_only_the_given_knobs():
    assert RunParams().train_overrides() == {}
    assert validate_params({}).train_overrides() == {}
    assert validate_params({name: None for name in TRAIN_PARAMS}).train_overrides() == {}
    assert validate_params({"seed": 0, "mixture": True}).train_overrides() == {"seed": 0, "mixture": True}
    # the old name of lr still works (saved triggers); both names at once is ambiguous
    assert validate_params({"learning_rate": 0.002}).train_overrides() == {"lr": 0.002}
    with pytest.raises(ParamError, match="'learning_rate' and 'lr' are the same knob"):
        validate_params({"learning_rate": 0.002, "lr": 0.001})


@pytest.mark.parametrize("name", TRAIN_PARAMS)
def test_training_params_are_derived_from_the_trainconfig_fields(name):
    f = FIELDS[name]
    spec = PARAM_SPECS[name]
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(f.default)]
    bounds = {k: f.metadata[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
              if k in f.metadata}
    assert spec["type"] == ["null", json_type]
    assert spec["default"] is None  # = the preset's value
    assert {k: spec[k] for k in spec if k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")} == bounds
    assert spec.get("enum") == ([None, *f.metadata["choices"]] if "choices" in f.metadata else None)
    assert spec["description"].lower().startswith(f.metadata["help"].lower())
    assert spec["title"] and spec == train_param_spec(name)


def test_exposed_knobs_include_everything_the_dag_had():
    before = {"epochs", "batch_size", "item_embedding", "user_embedding", "gap_embedding", "gap_exponent",
              "loss_time", "loss_rec", "loss_first", "lr", "lr_schedule", "tie_embeddings", "seed"}
    assert before | {"mixture", "personal_window", "decay"} <= set(TRAIN_PARAMS) <= set(FIELDS)
    assert PARAM_SPECS["preset"]["enum"] == [None, *PRESETS]
    assert set(PARAM_SPECS["format"]["enum"]) == set(FORMAT_PRESETS)  # every format has its preset
    # the specific bounds the trigger form had before they moved into TrainConfig
    assert (PARAM_SPECS["epochs"]["minimum"], PARAM_SPECS["epochs"]["maximum"]) == (1, 1000)
    assert PARAM_SPECS["lr"]["exclusiveMinimum"] == 0  # no maximum: tests drive training to overflow with 1e30
    assert (PARAM_SPECS["gap_exponent"]["exclusiveMinimum"], PARAM_SPECS["gap_exponent"]["maximum"]) == (0, 4)
    assert PARAM_SPECS["seed"]["minimum"] == 0


def _cfg(raw: dict) -> TrainConfig:
    return training_config(PipelineSettings.from_env({"THRNN_DEVICE": "cpu"}), validate_params(raw))


def test_omitted_knobs_take_the_preset_of_the_input_format():
    reddit = _cfg({"dataset": "nightly-r", "format": "reddit"})
    assert (reddit.epochs, reddit.item_embedding, reddit.lr, reddit.tie_embeddings) == (10, 50, 2e-3, True)
    assert reddit == config_for("reddit", "thrnn", device="cpu")
    lastfm = _cfg({"format": "lastfm"})
    assert (lastfm.epochs, lastfm.item_embedding, lastfm.user_embedding, lastfm.lr_schedule,
            lastfm.tie_embeddings, lastfm.seed) == (10, 100, 50, "cosine", True, 42)
    assert _cfg({"format": "events"}) == config_for("events", "thrnn", device="cpu")
    # given knobs override the preset, the others keep its values
    given = _cfg({"format": "reddit", "epochs": 3, "tie_embeddings": False})
    assert (given.epochs, given.tie_embeddings, given.item_embedding, given.lr) == (3, False, 50, 2e-3)


def test_the_preset_never_comes_from_the_dataset_name():
    tiny = validate_params({"dataset": "tiny", "format": "reddit"})
    assert tiny.train_preset == "reddit"
    assert _cfg({"dataset": "tiny", "format": "reddit"}) == config_for("reddit", "thrnn", device="cpu")
    assert validate_params({"dataset": "reddit", "format": "lastfm"}).train_preset == "lastfm"
    # an explicit preset wins over the format
    paper = _cfg({"dataset": "tiny", "format": "reddit", "preset": "paper-lastfm"})
    assert (paper.epochs, paper.item_embedding, paper.tie_embeddings) == (24, 100, False)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": 0}, "param 'epochs' must be >= 1, got 0"),
        ({"epochs": "3"}, "param 'epochs' must be of type ['null', 'integer']"),
        ({"epochs": True}, "param 'epochs' must be of type ['null', 'integer']"),
        ({"epochs": 2.5}, "param 'epochs' must be of type ['null', 'integer']"),
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
        ({"lr": 0}, "param 'lr' must be > 0"),
        ({"learning_rate": 0}, "param 'lr' must be > 0"),
        ({"lr": float("inf")}, "param 'lr' must be a finite number"),
        ({"epochs": 1001}, "param 'epochs' must be <= 1000"),
        ({"loss_rec": float("nan")}, "param 'loss_rec' must be a finite number"),
        ({"loss_rec": -0.1}, "param 'loss_rec' must be >= 0"),
        ({"decay": 1.0}, "param 'decay' must be < 1"),
        ({"decay": float("-inf")}, "param 'decay' must be a finite number"),
        ({"personal_window": 0}, "param 'personal_window' must be >= 1"),
        ({"seed": -1}, "param 'seed' must be >= 0"),
        ({"item_embedding": 5000}, "param 'item_embedding' must be <= 4096"),
        ({"mixture": 1}, "param 'mixture' must be of type ['null', 'boolean']"),
        ({"tie_embeddings": "yes"}, "param 'tie_embeddings' must be of type ['null', 'boolean']"),
        ({"preset": "tiny"}, "param 'preset' must be one of ['lastfm', 'reddit', 'events', 'paper-lastfm', "
                             "'paper-reddit'], got 'tiny'"),
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
    assert s.run_paths("lastfm", dt.date(2026, 1, 3)).root != p.root
    with pytest.raises(ValueError):
        parse_run_date("2026-01-02/../../x")
    with pytest.raises(TypeError):  # a text date goes through parse_run_date, never straight to a path
        s.run_paths("lastfm", "2026-01-03")
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
