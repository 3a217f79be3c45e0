"""The train task with THRNN_TRAIN_NPROC > 1: torchrun processes train, the task logs their epochs."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_sessions
from thrnn.io import split_from_sessions
from thrnn.launch import torchrun_command
from thrnn.pipeline import tasks
from thrnn.pipeline.params import validate_params
from thrnn.pipeline.settings import PipelineSettings

DATASET = "ddp"
DAY = dt.date(2026, 3, 1)


def test_nproc_setting_defaults_to_one_and_is_validated():
    assert PipelineSettings.from_env({}).train_nproc == 1
    assert PipelineSettings.from_env({"THRNN_TRAIN_NPROC": "4"}).train_nproc == 4
    with pytest.raises(ValueError, match="THRNN_TRAIN_NPROC must be >= 1"):
        PipelineSettings.from_env({"THRNN_TRAIN_NPROC": "0"})


def test_torchrun_command_gives_every_setting_through_the_config_file():
    cmd = torchrun_command(Path("/d"), Path("/r"), Path("/c.json"), 3)
    assert cmd[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "-m"]
    assert cmd[7:] == ["thrnn", "train", "--data", "/d", "--out", "/r", "--config", "/c.json", "--no-progress"]


@pytest.mark.slow
def test_train_task_with_two_processes_logs_every_epoch(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path), "THRNN_DEVICE": "cpu",
                                          "THRNN_TRAIN_NPROC": "2"})
    paths = settings.run_paths(DATASET, DAY)
    split_from_sessions(tiny_sessions(n_users=8), paths.data)
    params = validate_params({"dataset": DATASET, "format": "lastfm", "epochs": 2, "item_embedding": 8,
                              "batch_size": 4, "mixture": False, "seed": 1})
    try:
        state = tasks.train(settings, params, DAY)
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        steps = [m.step for m in client.get_metric_history(state.mlflow_run_id, "loss")]
        run = client.get_run(state.mlflow_run_id)
    finally:
        mlflow.set_tracking_uri(None)
    assert state.nproc == 2 and run.data.tags["train_nproc"] == "2"
    assert sorted(steps) == [1, 2]
    history = json.loads((paths.train / "history.json").read_text())
    assert history["world_size"] == 2 and len(history["epochs"]) == 2
    assert {p.name for p in paths.train.iterdir()} == {"model.pt", "config.json", "history.json", "checkpoint.pt"}
