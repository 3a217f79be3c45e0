"""MLflow side of the pipeline: tracking setup, the champion gate, registration and aliases.

One registered model per dataset (``thrnn-<dataset>``). Every nightly model is registered and tagged
with its metrics and run_date; the alias ``champion`` moves to it only when it is not worse than the
current champion on Recall@20 and on return-time MAE (tolerances configurable), when there is no
champion yet, or when promotion is forced. Rolling back = pointing the alias at an older version.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

CHAMPION = "champion"
RECALL = "recall@20"
MAE = "mae_hours"
# tags on every model version
TAG_RUN_DATE = "run_date"
TAG_FINGERPRINT = "fingerprint"
TAG_DATASET = "dataset"


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the champion gate."""

    promote: bool
    reason: str
    champion_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(metrics: Mapping[str, Any] | None, key: str) -> float | None:
    if not metrics or metrics.get(key) is None:
        return None
    try:
        value = float(metrics[key])
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def decide(
    new: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    champion_version: int | None = None,
    recall_tolerance: float = 0.0,
    mae_tolerance: float = 0.0,
    force: bool = False,
    new_run_date: dt.date | None = None,
    champion_run_date: dt.date | None = None,
) -> GateDecision:
    """Promote when Recall@20 >= champion - recall_tolerance and MAE <= champion * (1 + mae_tolerance).

    A metric the champion lacks does not block; a metric the new model lacks (or NaN) does. A backfill
    (new run_date before the champion's) never takes the alias from a later night unless forced.
    """
    if recall_tolerance < 0 or mae_tolerance < 0:
        raise ValueError("tolerances must be >= 0")
    cv = champion_version
    if force:
        return GateDecision(True, "forced promotion (force_promote=true)", cv)
    if champion is None:
        return GateDecision(True, "first model: no champion yet", cv)
    if new_run_date and champion_run_date and new_run_date < champion_run_date:
        return GateDecision(False, f"backfill for {new_run_date}: champion v{cv} is from the later night "
                                   f"{champion_run_date}", cv)
    new_recall, old_recall = _num(new, RECALL), _num(champion, RECALL)
    new_mae, old_mae = _num(new, MAE), _num(champion, MAE)
    why: list[str] = []
    if new_recall is None:
        why.append(f"new model has no {RECALL}")
    elif old_recall is not None and new_recall < old_recall - recall_tolerance:
        why.append(f"{RECALL} {new_recall:.4f} < champion {old_recall:.4f} - tolerance {recall_tolerance:g}")
    if new_mae is None:
        if old_mae is not None:
            why.append(f"new model has no {MAE}")
    elif old_mae is not None and new_mae > old_mae * (1 + mae_tolerance):
        why.append(f"{MAE} {new_mae:.2f} > champion {old_mae:.2f} x (1 + {mae_tolerance:g})")
    if why:
        return GateDecision(False, f"worse than champion v{cv}: " + "; ".join(why), cv)
    fmt = f"{RECALL} {new_recall:.4f} vs {old_recall if old_recall is None else round(old_recall, 4)}, " \
          f"{MAE} {new_mae if new_mae is None else round(new_mae, 2)} vs " \
          f"{old_mae if old_mae is None else round(old_mae, 2)}"
    return GateDecision(True, f"not worse than champion v{cv} ({fmt})", cv)


def setup_mlflow(tracking_uri: str):  # noqa: ANN201 - MlflowClient
    """Point MLflow (tracking and registry) at ``tracking_uri`` and return a client."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Experiment id of ``name``, created with its artifacts under ``artifact_root`` when missing
    (empty ``artifact_root``: the tracking server's default)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another task
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def champion_version(client: Any, model_name: str):  # noqa: ANN201 - ModelVersion | None
    """The version behind alias ``champion``, or None (no registered model or no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def version_metrics(mv: Any) -> dict[str, float]:
    """Metrics stored as tags on a model version (``metric.<name>``, ``@`` spelled ``_at_``)."""
    out = {}
    for key, value in (mv.tags or {}).items():
        if key.startswith("metric."):
            try:
                out[key[len("metric."):].replace("_at_", "@")] = float(value)
            except ValueError:
                continue
    return out


def find_version(client: Any, model_name: str, run_date: str, fingerprint: str):  # noqa: ANN201
    """An existing version registered for the same night and the same inputs (re-runs reuse it)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        return None
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        tags = mv.tags or {}
        if tags.get(TAG_RUN_DATE) == run_date and tags.get(TAG_FINGERPRINT) == fingerprint:
            return mv
    return None


def version_tags(metrics: Mapping[str, Any], run_date: str, fingerprint: str, dataset: str) -> dict[str, str]:
    tags = {TAG_RUN_DATE: run_date, TAG_FINGERPRINT: fingerprint, TAG_DATASET: dataset}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tags[f"metric.{key.replace('@', '_at_')}"] = repr(float(value))
    return tags


def register_and_gate(
    client: Any,
    model_name: str,
    *,
    model_uri: str | None,
    run_id: str,
    metrics: Mapping[str, Any],
    run_date: dt.date,
    fingerprint: str,
    dataset: str,
    recall_tolerance: float = 0.0,
    mae_tolerance: float = 0.0,
    force: bool = False,
    log_model: Any = None,
    head_to_head: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register tonight's model (or reuse the version of an identical earlier attempt) and apply the gate.

    ``log_model`` (called with no argument, returns a model URI) is only called when no version exists
    for this night and fingerprint, so a re-run of the same night registers nothing new.
    ``head_to_head`` (``{"champion_version", "new", "champion", "test_events"}``: both models' metrics
    on the same events of tonight's split) is what the gate compares when it is about the current
    champion; otherwise the gate compares with the champion's recorded metrics (another night's test
    split). Returns
    ``{"version", "reused", "promoted", "reason", "champion_before", "champion_after"}``.
    """
    import mlflow

    day = run_date.isoformat()
    existing = find_version(client, model_name, day, fingerprint)
    before = champion_version(client, model_name)
    before_v = int(before.version) if before is not None else None
    if existing is not None:
        version, reused = int(existing.version), True
        run_id = existing.run_id or run_id  # the run that produced the reused version
    else:
        uri = model_uri if model_uri is not None else log_model()
        mv = mlflow.register_model(uri, model_name, tags=version_tags(metrics, day, fingerprint, dataset))
        version, reused = int(mv.version), False
    tags = (existing.tags or {}) if existing is not None else {}
    if reused and "gate" in tags:
        # a re-run of the same night repeats the recorded decision and leaves the alias alone
        cb = tags.get("champion_before")
        decision = GateDecision(tags.get("promoted") == "true", tags["gate"], int(cb) if cb else None)
    else:
        champ_date = None
        if before is not None and (before.tags or {}).get(TAG_RUN_DATE):
            champ_date = dt.date.fromisoformat(before.tags[TAG_RUN_DATE])
        new_m, old_m, basis = metrics, version_metrics(before) if before is not None else None, ""
        if head_to_head and before_v is not None and head_to_head.get("champion_version") == before_v:
            new_m, old_m = head_to_head["new"], head_to_head["champion"]
            basis = f" [both on tonight's split, {head_to_head.get('test_events')} test events]"
        elif before is not None:
            basis = " [champion's recorded metrics, its own night]"
        decision = decide(
            new_m,
            old_m,
            champion_version=before_v,
            recall_tolerance=recall_tolerance,
            mae_tolerance=mae_tolerance,
            force=force,
            new_run_date=run_date,
            champion_run_date=champ_date,
        )
        if basis and not decision.reason.startswith(("forced", "backfill")):
            decision = GateDecision(decision.promote, decision.reason + basis, decision.champion_version)
        if decision.promote:
            client.set_registered_model_alias(model_name, CHAMPION, str(version))
        client.set_model_version_tag(model_name, str(version), "gate", decision.reason[:5000])
        client.set_model_version_tag(model_name, str(version), "promoted", str(decision.promote).lower())
        client.set_model_version_tag(model_name, str(version), "champion_before", str(before_v or ""))
    after = champion_version(client, model_name)
    return {
        "version": version,
        "reused": reused,
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_before": decision.champion_version,
        "champion_after": int(after.version) if after is not None else None,
        "run_id": run_id,
    }
