"""Run-time knobs of ``thrnn_nightly``: the DAG params, their JSON schema and their validation.

:data:`PARAM_SPECS` is the single source: the DAG turns each entry into an ``airflow.sdk.Param``
(type, title, description, enum / minimum / maximum, so the trigger form refuses bad values), and
:func:`validate_params` re-checks the whole set (including rules JSON schema cannot express, such as
"horizons strictly increasing") and returns a typed :class:`RunParams`. No Airflow import here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = ("lastfm", "reddit", "events")
DATASET_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# name -> JSON-schema keywords + default. Order = order in the trigger form.
PARAM_SPECS: dict[str, dict[str, Any]] = {
    "dataset": {
        "default": "lastfm",
        "type": "string",
        "pattern": DATASET_PATTERN,
        "title": "Dataset name",
        "description": "Names the registered model (thrnn-<dataset>) and the run folder "
        "$THRNN_HOME/runs/<dataset>/<run_date>/. Lower-case letters, digits, '-' and '_'.",
    },
    "format": {
        "default": "lastfm",
        "type": "string",
        "enum": list(FORMATS),
        "title": "Input format",
        "description": "lastfm (Last.fm-1K TSV), reddit (username,subreddit,utc CSV) or events "
        "(user_id,item_id,timestamp CSV/Parquet).",
    },
    "input_paths": {
        "default": [],
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "title": "Input paths",
        "description": "Raw log files or folders (local paths or any URI Spark reads). Empty = "
        "the paths of THRNN_INPUT_PATHS (comma-separated).",
    },
    "session_gap_seconds": {
        "default": None,
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 7 * 86400,
        "title": "Session gap (s)",
        "description": "A new session starts after a gap larger than this. Empty = per format "
        "(LastFM 3600, Reddit 1800).",
    },
    "max_bad_fraction": {
        "default": 0.01,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Max. quarantined fraction",
        "description": "Sessionize fails when more than this fraction of raw rows is malformed.",
    },
    "epochs": {
        "default": 10,
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "title": "Epochs",
        "description": "Training epochs of THRNN.",
    },
    "batch_size": {
        "default": 100,
        "type": "integer",
        "minimum": 1,
        "maximum": 100000,
        "title": "Batch size (users)",
        "description": "Users per training batch (paper: 100).",
    },
    "item_embedding": {
        "default": None,
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 4096,
        "title": "Item embedding size",
        "description": "Empty = paper default per dataset (LastFM 100, Reddit 50).",
    },
    "user_embedding": {
        "default": 10,
        "type": "integer",
        "minimum": 1,
        "maximum": 1024,
        "title": "User embedding size",
        "description": "Size of the user embedding of the inter-session GRU input.",
    },
    "gap_embedding": {
        "default": 5,
        "type": "integer",
        "minimum": 1,
        "maximum": 1024,
        "title": "Gap embedding size",
        "description": "Size of the gap-time bucket embedding.",
    },
    "gap_exponent": {
        "default": 1.0,
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 4,
        "title": "Gap exponent",
        "description": "The time model sees gap ** exponent (1.0 = plain; < 1 favours long gaps, "
        "> 1 short gaps).",
    },
    "loss_time": {
        "default": 0.45,
        "type": "number",
        "minimum": 0,
        "title": "Loss weight: time",
        "description": "Weight of the return-time negative log-likelihood.",
    },
    "loss_rec": {
        "default": 0.45,
        "type": "number",
        "minimum": 0,
        "title": "Loss weight: next item",
        "description": "Weight of the next-item cross-entropy.",
    },
    "loss_first": {
        "default": 0.1,
        "type": "number",
        "minimum": 0,
        "title": "Loss weight: first item",
        "description": "Weight of the first-item-of-next-session cross-entropy.",
    },
    "learning_rate": {
        "default": None,
        "type": ["null", "number"],
        "exclusiveMinimum": 0,
        "maximum": 1,
        "title": "Learning rate",
        "description": "Adam learning rate of everything but the time head. Empty = paper default (1e-3).",
    },
    "lr_schedule": {
        "default": "constant",
        "type": "string",
        "enum": ["constant", "cosine"],
        "title": "Learning-rate schedule",
        "description": "constant, or cosine decay over the epochs.",
    },
    "tie_embeddings": {
        "default": False,
        "type": "boolean",
        "title": "Tied item embeddings",
        "description": "Score next items with the item input embeddings (GRU4Rec's constrained embedding); "
        "chosen on validation splits of both excerpts, see docs/quality.md.",
    },
    "seed": {
        "default": 0,
        "type": "integer",
        "minimum": 0,
        "title": "Seed",
        "description": "Seed of training (and of everything random downstream).",
    },
    "top_k": {
        "default": 20,
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "title": "Top-K",
        "description": "Recommendations published per user.",
    },
    "horizons_hours": {
        "default": [24, 168, 720],
        "type": "array",
        "items": {"type": "number", "exclusiveMinimum": 0},
        "minItems": 3,
        "maxItems": 3,
        "title": "Return horizons (h)",
        "description": "Horizons of P(return within h), strictly increasing; published as the 1 d / "
        "7 d / 30 d columns; churn risk = P(no return within the last one).",
    },
    "risk_thresholds": {
        "default": [0.3, 0.7],
        "type": "array",
        "items": {"type": "number", "minimum": 0, "maximum": 1},
        "minItems": 2,
        "maxItems": 2,
        "title": "Risk bucket thresholds",
        "description": "low < first <= medium < second <= high, applied to churn risk.",
    },
    "recall_tolerance": {
        "default": 0.0,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Promotion tolerance: Recall@20",
        "description": "The new model may be at most this much (absolute) below the champion's "
        "Recall@20 and still be promoted.",
    },
    "mae_tolerance": {
        "default": 0.0,
        "type": "number",
        "minimum": 0,
        "title": "Promotion tolerance: MAE (relative)",
        "description": "The new model's return-time MAE may exceed the champion's by at most this "
        "fraction (0.05 = 5 %) and still be promoted.",
    },
    "force_promote": {
        "default": False,
        "type": "boolean",
        "title": "Force promotion",
        "description": "Move the champion alias to the new model whatever its metrics (for "
        "rollbacks, point the alias back in MLflow instead).",
    },
    "neural_baselines": {
        "default": False,
        "type": "boolean",
        "title": "Neural baselines",
        "description": "Also train the GRU4Rec and HRNN baselines (slow); the non-neural ones "
        "always run.",
    },
}


class ParamError(ValueError):
    """A DAG param is invalid; the message names the param and the rule."""


@dataclass(frozen=True)
class RunParams:
    """Validated params of one run (see :data:`PARAM_SPECS` for the meaning of each field)."""

    dataset: str = field(default="lastfm", metadata={"help": PARAM_SPECS["dataset"]["description"]})
    format: str = field(default="lastfm", metadata={"help": PARAM_SPECS["format"]["description"]})
    input_paths: tuple[str, ...] = field(default=(), metadata={"help": PARAM_SPECS["input_paths"]["description"]})
    session_gap_seconds: int | None = field(
        default=None, metadata={"help": PARAM_SPECS["session_gap_seconds"]["description"]}
    )
    max_bad_fraction: float = field(default=0.01, metadata={"help": PARAM_SPECS["max_bad_fraction"]["description"]})
    epochs: int = field(default=10, metadata={"help": PARAM_SPECS["epochs"]["description"]})
    batch_size: int = field(default=100, metadata={"help": PARAM_SPECS["batch_size"]["description"]})
    item_embedding: int | None = field(default=None, metadata={"help": PARAM_SPECS["item_embedding"]["description"]})
    user_embedding: int = field(default=10, metadata={"help": PARAM_SPECS["user_embedding"]["description"]})
    gap_embedding: int = field(default=5, metadata={"help": PARAM_SPECS["gap_embedding"]["description"]})
    gap_exponent: float = field(default=1.0, metadata={"help": PARAM_SPECS["gap_exponent"]["description"]})
    loss_time: float = field(default=0.45, metadata={"help": PARAM_SPECS["loss_time"]["description"]})
    loss_rec: float = field(default=0.45, metadata={"help": PARAM_SPECS["loss_rec"]["description"]})
    loss_first: float = field(default=0.1, metadata={"help": PARAM_SPECS["loss_first"]["description"]})
    learning_rate: float | None = field(default=None, metadata={"help": PARAM_SPECS["learning_rate"]["description"]})
    lr_schedule: str = field(default="constant", metadata={"help": PARAM_SPECS["lr_schedule"]["description"]})
    tie_embeddings: bool = field(default=False, metadata={"help": PARAM_SPECS["tie_embeddings"]["description"]})
    seed: int = field(default=0, metadata={"help": PARAM_SPECS["seed"]["description"]})
    top_k: int = field(default=20, metadata={"help": PARAM_SPECS["top_k"]["description"]})
    horizons_hours: tuple[float, float, float] = field(
        default=(24.0, 168.0, 720.0), metadata={"help": PARAM_SPECS["horizons_hours"]["description"]}
    )
    risk_thresholds: tuple[float, float] = field(
        default=(0.3, 0.7), metadata={"help": PARAM_SPECS["risk_thresholds"]["description"]}
    )
    recall_tolerance: float = field(default=0.0, metadata={"help": PARAM_SPECS["recall_tolerance"]["description"]})
    mae_tolerance: float = field(default=0.0, metadata={"help": PARAM_SPECS["mae_tolerance"]["description"]})
    force_promote: bool = field(default=False, metadata={"help": PARAM_SPECS["force_promote"]["description"]})
    neural_baselines: bool = field(default=False, metadata={"help": PARAM_SPECS["neural_baselines"]["description"]})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def train_overrides(self) -> dict[str, Any]:
        """Overrides for ``thrnn.config.config_for(dataset, **overrides)``."""
        o: dict[str, Any] = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "user_embedding": self.user_embedding,
            "gap_embedding": self.gap_embedding,
            "gap_exponent": self.gap_exponent,
            "loss_time": self.loss_time,
            "loss_rec": self.loss_rec,
            "loss_first": self.loss_first,
            "lr_schedule": self.lr_schedule,
            "tie_embeddings": self.tie_embeddings,
            "seed": self.seed,
        }
        if self.item_embedding is not None:
            o["item_embedding"] = self.item_embedding
        if self.learning_rate is not None:
            o["lr"] = self.learning_rate
        return o


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "null": (type(None),),
}


def _type_ok(value: Any, types: str | list[str]) -> bool:
    for t in [types] if isinstance(types, str) else types:
        # bool is an int in Python but not in JSON schema
        if isinstance(value, bool) and t in ("integer", "number"):
            continue
        if t == "integer" and isinstance(value, float) and value.is_integer():
            return True
        if isinstance(value, _JSON_TYPES[t]):
            return True
    return False


def _check_scalar(name: str, value: Any, spec: Mapping[str, Any]) -> None:
    if not _type_ok(value, spec["type"]):
        raise ParamError(f"param {name!r} must be of type {spec['type']}, got {value!r}")
    if value is None:
        return
    if "enum" in spec and value not in spec["enum"]:
        raise ParamError(f"param {name!r} must be one of {spec['enum']}, got {value!r}")
    if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
        raise ParamError(f"param {name!r} must match {spec['pattern']}, got {value!r}")
    if "minLength" in spec and len(value) < spec["minLength"]:
        raise ParamError(f"param {name!r} must not be empty")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(f"param {name!r} must be a finite number, got {value!r}")
        if "minimum" in spec and value < spec["minimum"]:
            raise ParamError(f"param {name!r} must be >= {spec['minimum']}, got {value!r}")
        if "maximum" in spec and value > spec["maximum"]:
            raise ParamError(f"param {name!r} must be <= {spec['maximum']}, got {value!r}")
        if "exclusiveMinimum" in spec and value <= spec["exclusiveMinimum"]:
            raise ParamError(f"param {name!r} must be > {spec['exclusiveMinimum']}, got {value!r}")


def _check(name: str, value: Any, spec: Mapping[str, Any]) -> None:
    _check_scalar(name, value, spec)
    if spec["type"] == "array":
        n = len(value)
        if n < spec.get("minItems", 0) or n > spec.get("maxItems", n):
            want = spec.get("minItems") if spec.get("minItems") == spec.get("maxItems") else "a valid number of"
            raise ParamError(f"param {name!r} must have {want} items, got {n}")
        for i, v in enumerate(value):
            _check_scalar(f"{name}[{i}]", v, spec["items"])


def validate_params(raw: Mapping[str, Any] | None) -> RunParams:
    """Check every param (unknown names too) and return them typed; raises :class:`ParamError`."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(PARAM_SPECS))
    if unknown:
        raise ParamError(f"unknown param(s) {unknown}; known: {sorted(PARAM_SPECS)}")
    values = {name: raw.get(name, spec["default"]) for name, spec in PARAM_SPECS.items()}
    for name, value in values.items():
        _check(name, value, PARAM_SPECS[name])
    # rules JSON schema cannot express
    horizons = [float(h) for h in values["horizons_hours"]]
    if any(b <= a for a, b in zip(horizons, horizons[1:], strict=False)):
        raise ParamError(f"param 'horizons_hours' must be strictly increasing, got {horizons}")
    low, high = (float(t) for t in values["risk_thresholds"])
    if not low < high:
        raise ParamError(f"param 'risk_thresholds' must be increasing (low < high), got {[low, high]}")
    if values["loss_time"] + values["loss_rec"] + values["loss_first"] <= 0:
        raise ParamError("params 'loss_time', 'loss_rec', 'loss_first' must not all be 0")
    ints = ("session_gap_seconds", "epochs", "batch_size", "item_embedding", "user_embedding", "gap_embedding",
            "seed", "top_k")
    for name in ints:
        if values[name] is not None:
            values[name] = int(values[name])
    for name in ("max_bad_fraction", "gap_exponent", "loss_time", "loss_rec", "loss_first",
                 "recall_tolerance", "mae_tolerance", "learning_rate"):
        if values[name] is not None:
            values[name] = float(values[name])
    values["input_paths"] = tuple(values["input_paths"])
    values["horizons_hours"] = tuple(horizons)
    values["risk_thresholds"] = (low, high)
    return RunParams(**values)


def param_defaults() -> dict[str, Any]:
    return {name: spec["default"] for name, spec in PARAM_SPECS.items()}
