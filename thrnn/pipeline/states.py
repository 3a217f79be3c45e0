"""What each task of ``thrnn_nightly`` hands to the next: one frozen dataclass per task.

A task writes its state to ``<run>/state/<task>.json`` (so a task re-run alone, by Airflow or by hand,
finds what the earlier tasks left) and returns it; the DAG file pushes ``to_dict()`` to XCom. The JSON
keys are the field names. ``from_dict`` ignores keys it does not know (a state written by another
release) and gives absent fields their defaults. Nothing heavy is imported here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from thrnn.files import write_json_atomic

from .settings import RunPaths


@dataclass(frozen=True, kw_only=True)
class TaskState:
    """Base of the task states: the task's name, its wall time and the JSON round trip."""

    task: ClassVar[str]
    seconds: float | None = None  # wall time of the task body; None when unknown

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what XCom and the state file hold)."""
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def path(cls, paths: RunPaths) -> Path:
        return paths.state / f"{cls.task}.json"

    def save(self, paths: RunPaths) -> Self:
        """Write the state file atomically (temporary file, then rename); returns ``self``."""
        write_json_atomic(self.to_dict(), self.path(paths), allow_nan=True)
        return self

    @classmethod
    def load(cls, paths: RunPaths) -> Self:
        path = cls.path(paths)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: task {cls.task!r} has not run for this date")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def exists(cls, paths: RunPaths) -> bool:
        return cls.path(paths).exists()


@dataclass(frozen=True, kw_only=True)
class SessionizeState(TaskState):
    task: ClassVar[str] = "sessionize"
    data_dir: str | None = None  # the split; None when it came from elsewhere (task marked successful)
    stats: dict[str, Any] = field(default_factory=dict)  # the job's stats.json (docs/design.md §3.4)


@dataclass(frozen=True, kw_only=True)
class ValidateState(TaskState):
    task: ClassVar[str] = "validate"
    figures: dict[str, int]  # users, items, sessions, events, train/test sessions and events


@dataclass(frozen=True, kw_only=True)
class TrainState(TaskState):
    task: ClassVar[str] = "train"
    mlflow_run_id: str
    fingerprint: str  # training.split_fingerprint: equal split, config and date, equal model
    run_dir: str = ""
    epochs: int | None = None
    device: str | None = None
    nproc: int = 1


@dataclass(frozen=True, kw_only=True)
class EvaluateState(TaskState):
    task: ClassVar[str] = "evaluate"
    metrics: dict[str, float | None]  # THRNN's figures of evaluation.GATE_KEYS
    baselines: list[str] = field(default_factory=list)  # every baseline that ran
    champion_head_to_head: dict[str, Any] | None = None  # registry.head_to_head
    baseline_figures: dict[str, dict[str, float | None]] = field(default_factory=dict)  # every ranking baseline
    gate_baselines: list[str] = field(default_factory=list)  # those the gate and the fallback consider
    best_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)  # registry.best_baselines
    fallback_baseline: str | None = None  # registry.fallback_baseline
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # tuned params of gate baselines

    def gate_figures(self) -> dict[str, dict[str, float | None]]:
        """The figures of the baselines the gate compares with."""
        return {n: self.baseline_figures[n] for n in self.gate_baselines}


@dataclass(frozen=True, kw_only=True)
class RegisterState(TaskState):
    """``registry.register_and_gate``'s record of the night's version, decision and serving choice."""

    task: ClassVar[str] = "register"
    version: int
    run_id: str
    promoted: bool
    reason: str
    champion_before: int | None = None
    champion_after: int | None = None
    candidate: int | None = None  # the version promote makes champion, None without one
    reused: bool = False
    below_baseline: list[str] = field(default_factory=list)
    best_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    serving: dict[str, Any] | None = None  # registry.Serving as a dict

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        # states of releases before the candidate: a promoted version was the night's candidate
        if "candidate" not in data:
            data = {**data, "candidate": data["version"] if data.get("promoted") else None}
        return super().from_dict(data)

    def served(self) -> dict[str, Any]:
        """The version the night serves: ``serving`` when recorded, else (state of an older release)
        the night's version when promoted or a backfill, else the champion the gate compared with. Never
        the alias as it is now: a re-run republishes the night with the model decided for it."""
        if self.serving:
            return dict(self.serving)
        own = self.promoted or self.reason.startswith("backfill")
        version = self.version if own or self.champion_before is None else self.champion_before
        return {"version": int(version), "baseline": None, "reason": f"v{version} (the night's recorded decision)"}


@dataclass(frozen=True, kw_only=True)
class ScoreState(TaskState):
    task: ClassVar[str] = "score"
    scored_with_version: int
    users: int  # users with a churn row
    recommendation_rows: int
    churn_rows: int
    recommendation_users: int | None = None
    recommendations_source: str | None = None  # "<model>/<version>" or a baseline's name
    serving: str = ""  # why this version / baseline serves
    unknown_users: int = 0  # users of the split the model never saw (not scored)
    unknown_item_events: int = 0  # events of items the model never saw (dropped from the history)


@dataclass(frozen=True, kw_only=True)
class PublishState(TaskState):
    task: ClassVar[str] = "publish"
    warehouse: str  # the warehouse URL, password masked
    rows: dict[str, int]  # rows published per table


@dataclass(frozen=True, kw_only=True)
class CheckState(TaskState):
    """The published night's row counts (checks.check_published)."""

    task: ClassVar[str] = "check"
    recommendation_rows: int
    churn_rows: int
    users: int


@dataclass(frozen=True, kw_only=True)
class PromoteState(TaskState):
    task: ClassVar[str] = "promote"
    moved: bool
    reason: str
    candidate: int | None = None
    champion_before: int | None = None
    champion_after: int | None = None


@dataclass(frozen=True, kw_only=True)
class BacktestState(TaskState):
    task: ClassVar[str] = "backtest"
    skipped: bool = False
    reason: str = ""  # why it was skipped
    figures: dict[str, Any] = field(default_factory=dict)  # published_date, users, AUC, MAE, per horizon


def require_checked(paths: RunPaths) -> None:
    """Refuse unless the night was published and then checked (the check's state is the newer one)."""
    published, checked = PublishState.path(paths), CheckState.path(paths)
    if not published.exists() or not checked.exists() or checked.stat().st_mtime < published.stat().st_mtime:
        raise RuntimeError(f"{paths.root}: publish and then check must succeed before promote")


STATES: dict[str, type[TaskState]] = {
    cls.task: cls for cls in (SessionizeState, ValidateState, TrainState, EvaluateState, RegisterState,
                              ScoreState, PublishState, CheckState, PromoteState, BacktestState)
}
