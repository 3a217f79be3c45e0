"""Typed training configuration and its presets (:data:`PRESETS`, the one preset table).

Layering: dataclass defaults < preset (:func:`config_for`, per model) < a YAML/JSON file < CLI flags
(< the nightly DAG's params). Each field is the single declaration of a training knob: its help text,
bounds (JSON-schema keywords ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``) and
``choices`` live in ``metadata``; ``__post_init__`` validates from them, the ``train`` CLI builds one
flag per field and ``thrnn.pipeline.params`` derives the DAG params from them.

Presets are chosen by input format, never by dataset name: ``lastfm``, ``reddit`` and ``events``
(generic logs, LastFM-like sizes) are the product defaults, the paper's settings plus what the
validation splits chose (docs/quality.md); ``paper-lastfm`` and ``paper-reddit`` are the paper's
settings (Table 2 of Vassøy et al. 2019).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = ("thrnn", "hrnn", "gru4rec")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine")
TIME_HEADS = ("lognormal", "rmtpp")


BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")  # JSON-schema keywords
_BOUND_RULES = {"minimum": (">=", lambda v, b: v >= b), "maximum": ("<=", lambda v, b: v <= b),
                "exclusiveMinimum": (">", lambda v, b: v > b), "exclusiveMaximum": ("<", lambda v, b: v < b)}


def check_field(f: dataclasses.Field, value: Any) -> Any:
    """``value`` checked against field ``f``'s type (that of its default) and its metadata bounds or
    choices; int/float normalized. Raises ValueError naming the field."""
    kind = type(f.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, got {value!r}")
    elif kind is int:
        # integral floats pass (JSON/YAML files); bools are not numbers here
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
            raise ValueError(f"{f.name} must be an integer, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{f.name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")
    elif not isinstance(value, kind):
        raise ValueError(f"{f.name} must be a {kind.__name__}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")
    for key in BOUNDS:
        if key in f.metadata:
            op, ok = _BOUND_RULES[key]
            if not ok(value, f.metadata[key]):
                raise ValueError(f"{f.name} must be {op} {f.metadata[key]}, got {value!r}")
    return value


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (THRNN, HRNN or the GRU4Rec-style session GRU)."""

    model: str = field(
        default="thrnn",
        metadata={"help": "thrnn (full model), hrnn (no user/gap context, no time model) or gru4rec "
                          "(session GRU without the inter-session level)", "choices": MODELS},
    )
    epochs: int = field(
        default=24, metadata={"help": "passes over every training session", "minimum": 1, "maximum": 1000}
    )
    batch_size: int = field(
        default=100,
        metadata={"help": "users per batch (each gives its next session)", "title": "Batch size (users)",
                  "minimum": 1, "maximum": 100_000},
    )
    lr: float = field(
        default=1e-3,
        metadata={"help": "Adam learning rate of everything but the time head", "title": "Learning rate",
                  "exclusiveMinimum": 0},
    )
    time_lr: float = field(
        default=1e-4,
        metadata={"help": "Adam learning rate of the time head (v, b, w)", "exclusiveMinimum": 0},
    )
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "constant, or cosine: both learning rates decay over the epochs as "
                          "0.5 (1 + cos(pi e / epochs)), e = epochs done",
                  "title": "Learning-rate schedule", "choices": LR_SCHEDULES},
    )
    item_embedding: int = field(
        default=100,
        metadata={"help": "item embedding size = hidden size of both GRUs (LastFM 100, Reddit 50)",
                  "title": "Item embedding size", "minimum": 1, "maximum": 4096},
    )
    user_embedding: int = field(
        default=10, metadata={"help": "user embedding size (inter-session input)", "minimum": 1, "maximum": 1024}
    )
    gap_embedding: int = field(
        default=5, metadata={"help": "gap-bucket embedding size (inter-session input)", "minimum": 1, "maximum": 1024}
    )
    n_gap_buckets: int = field(
        default=500,
        metadata={"help": "uniform gap buckets over [0, gap_upper_hours] for the gap embedding", "minimum": 1},
    )
    gap_upper_hours: float = field(
        default=500.0, metadata={"help": "gaps are clipped at this many hours for the model", "exclusiveMinimum": 0}
    )
    history_sessions: int = field(
        default=15, metadata={"help": "earlier session representations the inter-session GRU reads", "minimum": 1}
    )
    dropout: float = field(
        default=0.2, metadata={"help": "dropout on GRU inputs and outputs", "minimum": 0, "exclusiveMaximum": 1}
    )
    loss_time: float = field(
        default=0.45,
        metadata={"help": "weight of the return-time NLL in the joint loss", "title": "Loss weight: time",
                  "minimum": 0},
    )
    loss_rec: float = field(
        default=0.45,
        metadata={"help": "weight of the next-item cross-entropy", "title": "Loss weight: next item", "minimum": 0},
    )
    loss_first: float = field(
        default=0.1,
        metadata={"help": "weight of the first-item cross-entropy", "title": "Loss weight: first item",
                  "minimum": 0},
    )
    gap_exponent: float = field(
        default=1.0,
        metadata={"help": "the time loss fits u = (gap/time_unit_hours)**gap_exponent; < 1 stresses short "
                          "gaps, > 1 long ones; predictions are back-transformed to hours",
                  "exclusiveMinimum": 0, "maximum": 4},
    )
    time_unit_hours: float = field(
        default=24.0,
        metadata={"help": "unit of the model time axis in hours (24 = days, as the paper)", "exclusiveMinimum": 0},
    )
    time_cutoff_hours: float = field(
        default=600.0,
        metadata={"help": "cut-off of the return-time distribution for the mean and the median "
                          "(a bit above gap_upper_hours)", "exclusiveMinimum": 0},
    )
    w_init: float = field(default=-0.1, metadata={"help": "initial value of the RMTPP intensity slope w"})
    time_head: str = field(
        default="rmtpp",
        metadata={"help": "return-time model: lognormal (a mixture of log-normals on the state and the "
                          "covariates known when the last session ended, trained with censoring) or rmtpp "
                          "(the paper's exponential intensity); docs/model.md",
                  "title": "Return-time head", "choices": TIME_HEADS},
    )
    time_state: bool = field(
        default=True,
        metadata={"help": "the lognormal return-time head reads the inter-session state besides the covariates "
                          "(off: covariates only)", "title": "Return-time head reads the state"},
    )
    time_components: int = field(
        default=4,
        metadata={"help": "log-normal components of the lognormal return-time head", "minimum": 1, "maximum": 64},
    )
    tie_embeddings: bool = field(
        default=False,
        metadata={"help": "score next items with the item input embeddings (plus a bias) instead of a "
                          "separate output matrix (GRU4Rec's constrained embedding)",
                  "title": "Tied item embeddings"},
    )
    mixture: bool = field(
        default=False,
        metadata={"help": "both item heads output a learned mixture of the neural softmax and the user's "
                          "personal history (global transitions, session co-occurrence, own transitions, "
                          "decayed frequency, recency); off = the paper's plain softmax (docs/model.md)",
                  "title": "Personal-history mixture"},
    )
    personal_window: int = field(
        default=500,
        metadata={"help": "events of the user's history (before the target) the personal mixture "
                          "components read", "title": "Mixture window (events)", "minimum": 1},
    )
    decay: float = field(
        default=0.97,
        metadata={"help": "per-event decay of the decayed-frequency mixture component (0 < decay < 1)",
                  "title": "Mixture decay", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    )
    seed: int = field(
        default=42,
        metadata={"help": "seed of torch, numpy and python random", "minimum": 0, "maximum": 2**32 - 1},
    )
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda", "choices": DEVICES})
    grad_clip: float = field(
        default=0.0, metadata={"help": "clip the gradient norm at this value (0 = off)", "minimum": 0}
    )
    max_bad_steps: int = field(
        default=20,
        metadata={"help": "abort after this many skipped steps with a NaN/inf loss or gradient", "minimum": 0},
    )
    sampled_softmax: int = field(
        default=0,
        metadata={"help": "training only: softmax over the batch targets plus this many uniformly "
                          "sampled items (0 = full softmax); evaluation always ranks every item", "minimum": 0},
    )
    threads: int = field(
        default=0, metadata={"help": "torch CPU threads (0 = leave torch's default)", "minimum": 0}
    )
    amp: bool = field(default=False, metadata={"help": "bfloat16 autocast on CUDA (ignored on CPU)"})
    val_sessions: int = field(
        default=0,
        metadata={"help": "hold out each user's last N training sessions as a validation split "
                          "(0 = none); never uses test", "minimum": 0},
    )
    patience: int = field(
        default=0,
        metadata={"help": "with validation: stop after this many epochs without a better val recall@20 "
                          "and keep the best epoch's model (0 = train every epoch)", "minimum": 0},
    )
    mask_untrained_items: bool = field(
        default=False,
        metadata={"help": "rank items never seen in training last (score -inf) instead of with their "
                          "untrained scores"},
    )

    def __post_init__(self) -> None:
        # every field is checked (and int/float normalized) from its own metadata: one declaration
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_field(f, getattr(self, f.name)))

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


# ------------------------------------------------------------------------------------------ presets
# The one preset table. Paper / research-code defaults per dataset and model (Table 2; epochs of the
# research code, dropout 0 for the Reddit HRNN and the Reddit intra-only GRU).
_PAPER: dict[str, dict[str, dict[str, Any]]] = {
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
# What the validation splits chose on top of the paper's settings (docs/quality.md, "How the
# overrides were chosen"); never chosen on test.
_VALIDATED: dict[str, dict[str, dict[str, Any]]] = {
    "lastfm": {
        "thrnn": {"tie_embeddings": True, "lr_schedule": "cosine", "user_embedding": 50, "epochs": 40},
        "hrnn": {"tie_embeddings": True, "lr_schedule": "cosine", "epochs": 40},
        "gru4rec": {"tie_embeddings": True, "lr_schedule": "cosine", "epochs": 40},
    },
    "reddit": {
        "thrnn": {"lr": 2e-3, "tie_embeddings": True, "epochs": 40},
        "hrnn": {"lr": 2e-3, "tie_embeddings": True, "epochs": 40},
        "gru4rec": {"lr": 2e-3, "tie_embeddings": True, "epochs": 40},
    },
}
# Settings every product preset (lastfm, reddit, events) adds for every model: the repeat-aware
# mixture, which converges in fewer epochs and then overfits (docs/quality.md, validation curves),
# and the log-normal return-time head on the covariates alone, at the main learning rate (the state
# and higher rates did worse on validation: docs/return_time.md). The paper presets never get them.
_PRODUCT_EXTRA: dict[str, Any] = {"mixture": True, "epochs": 10, "time_head": "lognormal", "time_state": False,
                                  "time_lr": 1e-3}


def _product(paper: str) -> dict[str, dict[str, Any]]:
    return {m: {**_PAPER[paper][m], **_VALIDATED[paper][m], **_PRODUCT_EXTRA} for m in MODELS}


# preset -> model -> overrides of the dataclass defaults. lastfm/reddit/events are the product
# defaults (events, a generic log, gets LastFM-like sizes); paper-* keep the paper's settings.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "lastfm": _product("lastfm"),
    "reddit": _product("reddit"),
    "events": _product("lastfm"),
    "paper-lastfm": _PAPER["lastfm"],
    "paper-reddit": _PAPER["reddit"],
}
# Input format (thrnn_nightly's `format`, stats.json's "format") -> the preset it gets by default.
FORMAT_PRESETS: dict[str, str] = {"lastfm": "lastfm", "reddit": "reddit", "events": "events"}
DEFAULT_PRESET = "events"


def preset_for_format(fmt: str | None) -> str:
    """The preset of an input format; unknown or missing formats get the generic ``events`` preset."""
    return FORMAT_PRESETS.get(fmt or "", DEFAULT_PRESET)


def config_for(preset: str, model: str = "thrnn", **overrides: Any) -> TrainConfig:
    """``model``'s settings of ``preset`` (a key of :data:`PRESETS`) with ``overrides`` on top."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)} "
                         "(choose by input format, not by dataset name)")
    return TrainConfig.from_dict({**TrainConfig(model=model).to_dict(), **PRESETS[preset][model], **overrides})


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
        help_text = f"{f.metadata.get('help', '')} (default: the preset's, else {f.default})"
        if "choices" in f.metadata:
            parser.add_argument(flag, choices=f.metadata["choices"], default=None, help=help_text)
        elif isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(f.default), default=None, help=help_text)


def config_from_args(args: Any, preset: str = DEFAULT_PRESET, config_file: str | Path | None = None) -> TrainConfig:
    """Layer defaults < preset < config file < CLI flags given in ``args``."""
    file_overrides = load_config_file(config_file) if config_file else {}
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
           if getattr(args, f.name, None) is not None}
    merged = {**file_overrides, **cli}
    model = merged.pop("model", "thrnn")
    return config_for(preset, model, **merged)
