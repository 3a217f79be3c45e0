"""Run-time knobs of ``thrnn_nightly``: the DAG params, their JSON schema and their validation.

:data:`PARAM_SPECS` is the single source of the DAG params: the DAG turns each entry into an
``airflow.sdk.Param`` (type, title, description, enum / minimum / maximum, so the trigger form refuses
bad values), and :func:`validate_params` re-checks the whole set (including rules JSON schema cannot
express, such as "horizons strictly increasing") and returns a typed :class:`RunParams`.

The training knobs among them are not declared here: :data:`TRAIN_PARAMS` lists which
``thrnn.config.TrainConfig`` fields the DAG exposes and each param's schema is derived from the field
(help text, bounds, choices). They default to None = "the preset's value"; the preset is the param
``preset`` or, when empty, the one of the input format. No Airflow import here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from contract.constants import DEFAULT_GAP_SECONDS, FORMATS
from thrnn.config import BOUNDS, PRESETS, TrainConfig, config_for, preset_for_format

DATASET_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# TrainConfig fields the DAG exposes as params (order = order in the trigger form).
TRAIN_PARAMS: tuple[str, ...] = (
    "epochs", "batch_size", "item_embedding", "user_embedding", "gap_embedding", "gap_exponent", "loss_time",
    "loss_rec", "loss_first", "lr", "lr_schedule", "tie_embeddings", "mixture", "personal_window", "decay", "seed",
)
# Old param names still accepted in a run's conf (saved triggers), mapped to the current ones.
PARAM_ALIASES: dict[str, str] = {"learning_rate": "lr"}

_JSON_TYPE_OF: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}
_TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


def train_param_spec(name: str) -> dict[str, Any]:
    """The DAG param of TrainConfig field ``name``: nullable, default None = the preset's value."""
    f = _TRAIN_FIELDS[name]
    spec: dict[str, Any] = {
        "default": None,
        "type": ["null", _JSON_TYPE_OF[type(f.default)]],
        "title": f.metadata.get("title", name.replace("_", " ").capitalize()),
        "description": f"{f.metadata['help'][:1].upper()}{f.metadata['help'][1:]}. Empty = the preset's value.",
    }
    spec.update({k: f.metadata[k] for k in BOUNDS if k in f.metadata})
    if "choices" in f.metadata:
        spec["enum"] = [None, *f.metadata["choices"]]  # null must be in the enum to be a valid value
    return spec


# name -> JSON-schema keywords + default. Order = order in the trigger form.
_DATA_SPECS: dict[str, dict[str, Any]] = {
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
    "preset": {
        "default": None,
        "type": ["null", "string"],
        "enum": [None, *PRESETS],
        "title": "Training preset",
        "description": "Training settings the training params below start from: lastfm, reddit, events "
        "(validated product defaults; events = LastFM-like sizes) or paper-lastfm / paper-reddit (the "
        "paper's settings). Empty = the preset of the input format.",
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
        "description": "A new session starts after a gap larger than this. Empty = per format ("
        + ", ".join(f"{fmt} {gap:g}" for fmt, gap in DEFAULT_GAP_SECONDS.items()) + ").",
    },
    "max_bad_fraction": {
        "default": 0.01,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Max. quarantined fraction",
        "description": "Sessionize fails when more than this fraction of raw rows is malformed.",
    },
}
_OUTPUT_SPECS: dict[str, dict[str, Any]] = {
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
    "baseline_tolerance": {
        "default": 0.0,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Promotion tolerance: best baseline",
        "description": "The new model may be at most this much (absolute) below the best baseline "
        "of tonight's split on next-item and first-item Recall@20 and MRR@20 and still be promoted; "
        "when no model qualifies the night publishes that baseline's lists.",
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
        "description": "Make the new model the champion whatever its metrics, once the night is "
        "published and checked; never for a backfill (a night older than the newest published one). "
        "For rollbacks, point the alias back in MLflow instead.",
    },
    "neural_baselines": {
        "default": False,
        "type": "boolean",
        "title": "Neural baselines",
        "description": "Also train the GRU4Rec and HRNN baselines (slow); the non-neural ones "
        "always run.",
    },
    "backtest_days": {
        "default": 0,
        "type": "integer",
        "minimum": 0,
        "maximum": 3660,
        "title": "Backtest an earlier night (days back)",
        "description": "0 = off. N > 0: the last task checks the churn_risk rows published N days "
        "before the run date against the sessions since then (tonight's data): Brier score, "
        "calibration, AUC and return-time MAE, in the night's folder and MLflow run. With 30 every "
        "horizon is observable.",
    },
}
PARAM_SPECS: dict[str, dict[str, Any]] = {
    **_DATA_SPECS,
    **{name: train_param_spec(name) for name in TRAIN_PARAMS},
    **_OUTPUT_SPECS,
}


class ParamError(ValueError):
    """A DAG param is invalid; the message names the param and the rule."""


def _help(name: str) -> dict[str, str]:
    return {"help": PARAM_SPECS[name]["description"]}


@dataclass(frozen=True)
class RunParams:
    """Validated params of one run (see :data:`PARAM_SPECS` for the meaning of each field).

    ``train`` holds only the training knobs (:data:`TRAIN_PARAMS`) that were given, so everything
    else keeps the preset's value.
    """

    dataset: str = field(default="lastfm", metadata=_help("dataset"))
    format: str = field(default="lastfm", metadata=_help("format"))
    preset: str | None = field(default=None, metadata=_help("preset"))
    input_paths: tuple[str, ...] = field(default=(), metadata=_help("input_paths"))
    session_gap_seconds: int | None = field(default=None, metadata=_help("session_gap_seconds"))
    max_bad_fraction: float = field(default=0.01, metadata=_help("max_bad_fraction"))
    train: dict[str, Any] = field(default_factory=dict, hash=False,
                                  metadata={"help": "given TrainConfig overrides (TRAIN_PARAMS)"})
    top_k: int = field(default=20, metadata=_help("top_k"))
    horizons_hours: tuple[float, float, float] = field(default=(24.0, 168.0, 720.0), metadata=_help("horizons_hours"))
    risk_thresholds: tuple[float, float] = field(default=(0.3, 0.7), metadata=_help("risk_thresholds"))
    recall_tolerance: float = field(default=0.0, metadata=_help("recall_tolerance"))
    baseline_tolerance: float = field(default=0.0, metadata=_help("baseline_tolerance"))
    mae_tolerance: float = field(default=0.0, metadata=_help("mae_tolerance"))
    force_promote: bool = field(default=False, metadata=_help("force_promote"))
    neural_baselines: bool = field(default=False, metadata=_help("neural_baselines"))
    backtest_days: int = field(default=0, metadata=_help("backtest_days"))

    @property
    def train_preset(self) -> str:
        """The preset training starts from: the param ``preset``, else the input format's."""
        return self.preset or preset_for_format(self.format)

    def to_dict(self) -> dict[str, Any]:
        """One entry per DAG param (training knobs not given are None): ``validate_params`` round-trips it."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "train":
                d.update({name: self.train.get(name) for name in TRAIN_PARAMS})
            else:
                v = getattr(self, f.name)
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def train_overrides(self) -> dict[str, Any]:
        """The training knobs given for this run: overrides for ``config_for(self.train_preset, ...)``."""
        return dict(self.train)


# The schema keys the specs use, as the one-line message a trigger form shows; ``{v}`` is the rule's
# value and ``{got}`` the param's. Airflow's ``Param`` validates with jsonschema too, so a value refused
# here is refused in the trigger form in the same terms.
_MESSAGES: dict[str, str] = {
    "type": "must be of type {v}",
    "enum": "must be one of {v}",
    "pattern": "must match {v}",
    "minLength": "must not be empty",
    "minimum": "must be >= {v}",
    "maximum": "must be <= {v}",
    "exclusiveMinimum": "must be > {v}",
    "exclusiveMaximum": "must be < {v}",
    "minItems": "must have {v} items",
    "maxItems": "must have {v} items",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(name: str, value: Any, spec: Mapping[str, Any]) -> None:
    """Validate one param against its JSON schema (jsonschema), plus finiteness, which JSON schema has no
    word for (NaN passes every bound); raises :class:`ParamError` naming the param (``name[i]`` for an
    item of an array)."""
    import jsonschema

    schema = {k: v for k, v in spec.items() if k not in ("default", "title", "description")}
    for i, v in enumerate(value if spec["type"] == "array" and isinstance(value, list | tuple) else [value]):
        if _is_number(v) and not math.isfinite(v):
            where = f"{name}[{i}]" if spec["type"] == "array" else name
            raise ParamError(f"param {where!r} must be a finite number, got {v!r}")
    # jsonschema matches a pattern with re.search, where "$" also matches before a final line feed
    # ("lastfm\n" would pass "^[a-z]+$"): the whole value must match
    if "pattern" in spec and isinstance(value, str) and not re.fullmatch(spec["pattern"], value):
        raise ParamError(f"param {name!r} must match {spec['pattern']}, got {value!r}")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value),
                    key=lambda e: (list(e.path), list(_MESSAGES).index(e.validator) if e.validator in _MESSAGES else 99))
    if not errors:
        return
    err = errors[0]
    where = name + "".join(f"[{i}]" for i in err.path)
    rule = err.validator_value
    if err.validator == "enum":
        rule = [v for v in rule if v is not None]
    got = f"{len(err.instance)}" if err.validator in ("minItems", "maxItems") else repr(err.instance)
    text = _MESSAGES.get(err.validator, err.message)
    if err.validator == "minLength":
        raise ParamError(f"param {where!r} {text}")
    raise ParamError(f"param {where!r} {text.format(v=rule)}, got {got}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_input_path(name: str, path: str) -> None:
    """A raw input path given at trigger time: no control characters (the OS cuts a path at NUL; Spark
    and the shell split at line breaks) and no ``..`` component (a path that climbs out of where it
    seems to point is a mistake or an attack, never what a night needs: give the plain path)."""
    if _CONTROL.search(path):
        raise ParamError(f"param {name!r} must not hold control characters (NUL, line breaks, ...), got {path!r}")
    if ".." in re.split(r"[/\\]", path.split("://", 1)[-1]):
        raise ParamError(f"param {name!r} must not hold '..' path components, got {path!r}")


def validate_params(raw: Mapping[str, Any] | None) -> RunParams:
    """Check every param (unknown names too) and return them typed; raises :class:`ParamError`."""
    raw = dict(raw or {})
    for old, new in PARAM_ALIASES.items():
        if old in raw:
            if raw.get(new) is not None and raw[old] is not None:
                raise ParamError(f"params {old!r} and {new!r} are the same knob: give only {new!r}")
            value = raw.pop(old)
            if raw.get(new) is None:
                raw[new] = value
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
    for name in ("session_gap_seconds", "top_k"):
        if values[name] is not None:
            values[name] = int(values[name])
    for name in ("max_bad_fraction", "recall_tolerance", "baseline_tolerance", "mae_tolerance"):
        values[name] = float(values[name])
    for i, path in enumerate(values["input_paths"]):
        _check_input_path(f"input_paths[{i}]", path)
    values["input_paths"] = tuple(values["input_paths"])
    values["horizons_hours"] = tuple(horizons)
    values["risk_thresholds"] = (low, high)
    train: dict[str, Any] = {}
    for name in TRAIN_PARAMS:
        value = values.pop(name)
        if value is not None:
            kind = type(_TRAIN_FIELDS[name].default)
            train[name] = kind(value) if kind in (int, float) else value
    params = RunParams(**values, train=train)
    # the knobs layered on the preset must make a valid config (cross-field rules too)
    try:
        cfg = config_for(params.train_preset, "thrnn", **train)
    except ValueError as err:
        raise ParamError(f"training params: {err}") from err
    if cfg.loss_time + cfg.loss_rec + cfg.loss_first <= 0:
        raise ParamError("params 'loss_time', 'loss_rec', 'loss_first' must not all be 0")
    return params


def param_defaults() -> dict[str, Any]:
    return {name: spec["default"] for name, spec in PARAM_SPECS.items()}
