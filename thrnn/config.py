"""Typed training configuration with the paper's per-dataset defaults (Table 2 of Vassøy et al. 2019).

Layering: dataclass defaults < :func:`config_for` (dataset and model) < a YAML/JSON file < CLI flags.
Every field documents itself through ``metadata["help"]``; the ``train`` CLI builds one flag per field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = ("thrnn", "hrnn", "gru4rec")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (THRNN, HRNN or the GRU4Rec-style session GRU)."""

    model: str = field(
        default="thrnn",
        metadata={"help": "thrnn (full model), hrnn (no user/gap context, no time model) or gru4rec "
                          "(session GRU without the inter-session level)"},
    )
    epochs: int = field(default=24, metadata={"help": "passes over every training session"})
    batch_size: int = field(default=100, metadata={"help": "users per batch (each gives its next session)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of everything but the time head"})
    time_lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the time head (v, b, w)"})
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "constant, or cosine: both learning rates decay over the epochs as "
                          "0.5 (1 + cos(pi e / epochs)), e = epochs done"},
    )
    item_embedding: int = field(
        default=100, metadata={"help": "item embedding size = hidden size of both GRUs (LastFM 100, Reddit 50)"}
    )
    user_embedding: int = field(default=10, metadata={"help": "user embedding size (inter-session input)"})
    gap_embedding: int = field(default=5, metadata={"help": "gap-bucket embedding size (inter-session input)"})
    n_gap_buckets: int = field(
        default=500, metadata={"help": "uniform gap buckets over [0, gap_upper_hours] for the gap embedding"}
    )
    gap_upper_hours: float = field(
        default=500.0, metadata={"help": "gaps are clipped at this many hours for the model"}
    )
    history_sessions: int = field(
        default=15, metadata={"help": "earlier session representations the inter-session GRU reads"}
    )
    dropout: float = field(default=0.2, metadata={"help": "dropout on GRU inputs and outputs"})
    loss_time: float = field(default=0.45, metadata={"help": "weight of the return-time NLL in the joint loss"})
    loss_rec: float = field(default=0.45, metadata={"help": "weight of the next-item cross-entropy"})
    loss_first: float = field(default=0.1, metadata={"help": "weight of the first-item cross-entropy"})
    gap_exponent: float = field(
        default=1.0,
        metadata={"help": "the time loss fits u = (gap/time_unit_hours)**gap_exponent; < 1 stresses short "
                          "gaps, > 1 long ones; predictions are back-transformed to hours"},
    )
    time_unit_hours: float = field(
        default=24.0, metadata={"help": "unit of the model time axis in hours (24 = days, as the paper)"}
    )
    time_cutoff_hours: float = field(
        default=600.0,
        metadata={"help": "cut-off of the return-time distribution for the mean and the median "
                          "(a bit above gap_upper_hours)"},
    )
    w_init: float = field(default=-0.1, metadata={"help": "initial value of the intensity slope w"})
    tie_embeddings: bool = field(
        default=False,
        metadata={"help": "score next items with the item input embeddings (plus a bias) instead of a "
                          "separate output matrix (GRU4Rec's constrained embedding)"},
    )
    mixture: bool = field(
        default=False,
        metadata={"help": "both item heads output a learned mixture of the neural softmax and the user's "
                          "personal history (global transitions, own transitions, decayed frequency, "
                          "recency); off = the paper's plain softmax (docs/model.md)"},
    )
    personal_window: int = field(
        default=500,
        metadata={"help": "events of the user's history (before the target) the personal mixture "
                          "components read"},
    )
    decay: float = field(
        default=0.97,
        metadata={"help": "per-event decay of the decayed-frequency mixture component (0 < decay < 1)"},
    )
    seed: int = field(default=42, metadata={"help": "seed of torch, numpy and python random"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the gradient norm at this value (0 = off)"})
    max_bad_steps: int = field(
        default=20, metadata={"help": "abort after this many skipped steps with a NaN/inf loss or gradient"}
    )
    sampled_softmax: int = field(
        default=0,
        metadata={"help": "training only: softmax over the batch targets plus this many uniformly "
                          "sampled items (0 = full softmax); evaluation always ranks every item"},
    )
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = leave torch's default)"})
    amp: bool = field(default=False, metadata={"help": "bfloat16 autocast on CUDA (ignored on CPU)"})
    val_sessions: int = field(
        default=0,
        metadata={"help": "hold out each user's last N training sessions as a validation split "
                          "(0 = none); never uses test"},
    )
    patience: int = field(
        default=0,
        metadata={"help": "with validation: stop after this many epochs without a better val recall@20 "
                          "and keep the best epoch's model (0 = train every epoch)"},
    )
    mask_untrained_items: bool = field(
        default=False,
        metadata={"help": "rank items never seen in training last (score -inf) instead of with their "
                          "untrained scores"},
    )

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        positive = ("epochs", "batch_size", "item_embedding", "user_embedding", "gap_embedding",
                    "n_gap_buckets", "history_sessions")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "time_lr", "gap_upper_hours", "gap_exponent", "time_unit_hours",
                     "time_cutoff_hours"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("loss_time", "loss_rec", "loss_first", "grad_clip", "sampled_softmax", "threads",
                     "val_sessions", "patience", "max_bad_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.personal_window < 1:
            raise ValueError(f"personal_window must be >= 1, got {self.personal_window}")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def has_inter(self) -> bool:
        """Inter-session level (FIFO of session representations); off for gru4rec."""
        return self.model != "gru4rec"

    @property
    def has_context(self) -> bool:
        """User and gap-bucket embeddings in the inter-session input; THRNN only."""
        return self.model == "thrnn"

    @property
    def has_time(self) -> bool:
        """Time head and first-item head with the joint loss; THRNN only."""
        return self.model == "thrnn"

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of both learning rates during epoch ``epoch`` (0-based)."""
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**d)

    def replace(self, **overrides: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **overrides})


# Paper / research-code defaults per dataset and model (epochs of the research code, dropout 0 for
# the Reddit HRNN and the Reddit intra-only GRU).
_DATASET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "lastfm": {
        "thrnn": {"item_embedding": 100, "epochs": 24, "dropout": 0.2},
        "hrnn": {"item_embedding": 100, "epochs": 21, "dropout": 0.2},
        "gru4rec": {"item_embedding": 100, "epochs": 30, "dropout": 0.2},
    },
    "reddit": {
        "thrnn": {"item_embedding": 50, "epochs": 30, "dropout": 0.2},
        "hrnn": {"item_embedding": 50, "epochs": 20, "dropout": 0.0},
        "gru4rec": {"item_embedding": 50, "epochs": 30, "dropout": 0.0},
    },
}


def config_for(dataset: str, model: str = "thrnn", **overrides: Any) -> TrainConfig:
    """Paper defaults for ``dataset`` ("lastfm" | "reddit"; anything else gets LastFM-like defaults)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    base = _DATASET_DEFAULTS.get(dataset.lower(), _DATASET_DEFAULTS["lastfm"])[model]
    return TrainConfig.from_dict({**TrainConfig(model=model).to_dict(), **base, **overrides})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Overrides from a YAML (``.yaml``/``.yml``) or JSON file: a flat mapping of TrainConfig fields."""
    p = Path(path)
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{p}: unknown TrainConfig keys {unknown}")
    return data


def add_config_arguments(parser: Any) -> None:
    """One ``--flag`` per TrainConfig field (default None = not given, so layering can tell)."""
    import argparse

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: dataset preset, else {f.default})"
        if f.name == "model":
            parser.add_argument(flag, choices=MODELS, default=None, help=help_text)
        elif f.name == "device":
            parser.add_argument(flag, choices=DEVICES, default=None, help=help_text)
        elif f.name == "lr_schedule":
            parser.add_argument(flag, choices=LR_SCHEDULES, default=None, help=help_text)
        elif isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(f.default), default=None, help=help_text)


def config_from_args(args: Any, dataset: str = "lastfm", config_file: str | Path | None = None) -> TrainConfig:
    """Layer defaults < dataset preset < config file < CLI flags given in ``args``."""
    file_overrides = load_config_file(config_file) if config_file else {}
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
           if getattr(args, f.name, None) is not None}
    merged = {**file_overrides, **cli}
    model = merged.pop("model", "thrnn")
    return config_for(dataset, model, **merged)
