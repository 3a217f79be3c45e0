"""The train task's parts: the training config of the night's params, the fingerprint of its inputs,
the night's MLflow run and the fit (in this process or in torchrun processes). Heavy libraries (torch,
mlflow, pandas) are imported inside."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contract import columns as C

from . import registry
from .params import RunParams
from .settings import PipelineSettings, RunPaths, registered_model_name


def training_config(settings: PipelineSettings, params: RunParams):  # noqa: ANN201 - TrainConfig
    """The preset of the input format (or the param preset), never of the dataset name; given knobs on top."""
    from thrnn.config import config_for

    return config_for(params.train_preset, "thrnn", **params.train_overrides(), device=settings.device)


def split_fingerprint(data_dir: Path, cfg: Mapping[str, Any], run_date: dt.date) -> str:
    """Hash of the split's content, the training config and the date: equal inputs, equal model."""
    import pandas as pd

    from thrnn.io import read_split

    split = read_split(data_dir)
    h = hashlib.sha256(run_date.isoformat().encode())
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for frame in (split.train, split.test, split.items, split.users):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


def _log_epoch(epoch: int, record: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_metrics({k: v for k, v in registry.mlflow_metrics(record).items() if k != "epoch"}, step=int(epoch))


@contextmanager
def training_run(settings: PipelineSettings, params: RunParams, run_date: dt.date, paths: RunPaths,
                 cfg: Any, fingerprint: str) -> Iterator[Any]:
    """The night's MLflow run (one per attempt), tagged with the date, the fingerprint and the split's
    figures, with the training config and the other DAG params as params."""
    import mlflow

    registry.setup_mlflow(settings.tracking_uri)
    exp = registry.ensure_experiment(registered_model_name(params.dataset), settings.artifact_root)
    stats_file = paths.data / C.STATS_FILE
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    tags = {"run_date": run_date.isoformat(), "dataset": params.dataset, "fingerprint": fingerprint,
            **{f"data.{k}": str(v) for k, v in stats.items()}}
    with mlflow.start_run(experiment_id=exp, run_name=f"{params.dataset}-{run_date}", tags=tags) as run:
        mlflow.log_params({k: ("" if v is None else v) for k, v in cfg.to_dict().items()})
        mlflow.log_params({f"dag.{k}": v for k, v in params.to_dict().items()
                           if k not in cfg.to_dict() and k != "input_paths"})
        yield run


def fit(settings: PipelineSettings, paths: RunPaths, cfg: Any) -> dict[str, Any]:
    """Train in this process, or with ``THRNN_TRAIN_NPROC`` > 1 in torchrun data-parallel processes that
    do not talk to MLflow: their per-epoch records are logged here afterwards, at the same steps."""
    import mlflow

    if settings.train_nproc <= 1:
        from thrnn.train import train as train_model

        return train_model(paths.data, paths.train, cfg, progress=True, on_epoch=_log_epoch)
    from thrnn.launch import train_distributed

    mlflow.set_tag("train_nproc", settings.train_nproc)
    history = train_distributed(paths.data, paths.train, cfg, settings.train_nproc)
    for record in history["epochs"]:
        _log_epoch(int(record["epoch"]), record)
    return history


def log_run_files(settings: PipelineSettings, cfg: Any, history: Mapping[str, Any]) -> None:
    """config.json, history.json and settings.json (password masked) to the active run."""
    import mlflow

    for name, content in (("config.json", cfg.to_dict()), ("history.json", history),
                          ("settings.json", settings.to_dict())):
        mlflow.log_dict(content, name)
