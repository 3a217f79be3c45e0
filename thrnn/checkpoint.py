"""Run-folder files: the per-epoch training checkpoint and the final ``model.pt``.

``model.pt`` holds only what inference needs (format tag, config, catalogue and user counts, the
state dict), so :func:`load_run` rebuilds the model without the training code. Every write goes to
a temporary file in the same folder first and is renamed into place (atomic on one file system).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from thrnn.config import TrainConfig
from thrnn.files import atomic_write, atomic_write_text
from thrnn.models import HierarchicalGRU, build_model

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
MODEL_FORMAT = "thrnn-model/1"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def save_model(run_dir: str | Path, model: HierarchicalGRU, cfg: TrainConfig,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``run_dir/model.pt`` (CPU tensors) and ``run_dir/config.json``."""
    state = state_dict if state_dict is not None else model.state_dict()
    payload = {
        "format": MODEL_FORMAT,
        "config": cfg.to_dict(),
        "n_items": model.n_items,
        "n_users": model.n_users,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }
    atomic_write_json(cfg.to_dict(), Path(run_dir) / CONFIG_FILE)
    return atomic_torch_save(payload, Path(run_dir) / MODEL_FILE)


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[HierarchicalGRU, TrainConfig]:
    """Model and config from a ``model.pt`` (eval mode, on ``device``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {path} (did training finish?)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a {MODEL_FORMAT} file")
    cfg = TrainConfig.from_dict(payload["config"])
    model = build_model(cfg, int(payload["n_items"]), int(payload["n_users"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), cfg


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[HierarchicalGRU, TrainConfig]:
    """``(model, cfg)`` of a training run folder (reads ``run_dir/model.pt``)."""
    return load_model_file(Path(run_dir) / MODEL_FILE, device)


def save_checkpoint(run_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Write the resumable training state ``run_dir/checkpoint.pt``."""
    return atomic_torch_save(payload, Path(run_dir) / CHECKPOINT_FILE)


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The training state of ``run_dir``, or None when there is no checkpoint."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    # RNG states are tensors and plain Python objects (lists/tuples); the file is our own.
    return torch.load(path, map_location="cpu", weights_only=False)
