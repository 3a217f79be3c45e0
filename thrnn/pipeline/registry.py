"""MLflow side of the pipeline: tracking setup, the champion gate, registration and aliases.

One registered model per dataset (``thrnn-<dataset>``). Every nightly model is registered and tagged
with its metrics and run_date; the gate makes it the night's candidate only when it is at least as
good as the best baseline of tonight's split on next-item and first-item Recall@20 and MRR@20
(absolute tolerance ``baseline_tolerance``) and not worse than the current champion on Recall@20 and
on return-time MAE (tolerances configurable; no champion yet counts as not worse), or when promotion
is forced. The alias ``champion`` moves to the candidate only in the night's last task, after its
tables are published and checked (:func:`promote_candidate`), so a night that fails on the way leaves
the champion where it was. A backfill (a night older than the champion's or than the newest
published night) is never a candidate and is served by its own model, never by a later night's.
When no model qualifies the night publishes the lists of the baseline best on first-item Recall@20
(:func:`choose_serving`). Rolling back = pointing the alias at an older version.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .params import RunParams
    from .settings import PipelineSettings
    from .states import EvaluateState, RegisterState, TrainState

log = logging.getLogger(__name__)

CHAMPION = "champion"
RECALL = "recall@20"
MRR = "mrr@20"
FIRST_RECALL = "first_item_recall@20"
FIRST_MRR = "first_item_mrr@20"
MAE = "mae_hours"
# what a model must match against the best baseline (next item, then first item of the next session)
BASELINE_METRICS = (RECALL, MRR, FIRST_RECALL, FIRST_MRR)
# ties between baselines go to the simpler one (cheaper to run, easier to explain), then by name
BASELINE_ORDER = ("most_popular", "markov1", "repeat_last", "user_recency", "user_decay", "user_markov1",
                  "blend", "sknn")
_COMPANION = {RECALL: MRR, MRR: RECALL, FIRST_RECALL: FIRST_MRR, FIRST_MRR: FIRST_RECALL}
# metrics are ratios of counts: a difference below this is rounding, not a worse model
_EPS = 1e-12
# tags on every model version
TAG_RUN_DATE = "run_date"
TAG_FINGERPRINT = "fingerprint"
TAG_DATASET = "dataset"
TAG_CANDIDATE = "candidate_for"  # run date of the night that may make the version champion


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the champion gate."""

    promote: bool
    reason: str
    champion_version: int | None = None
    below_baseline: tuple[str, ...] = ()  # metrics where the model is below the best baseline

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


def _baseline_rank(name: str) -> tuple[int, str]:
    return (BASELINE_ORDER.index(name) if name in BASELINE_ORDER else len(BASELINE_ORDER), name)


def best_baselines(
    figures: Mapping[str, Mapping[str, Any]] | None, metrics: tuple[str, ...] = BASELINE_METRICS
) -> dict[str, dict[str, Any]]:
    """``{metric: {"name", "value"}}``: the baseline with the highest figure on each metric.

    Equal figures go to the better companion metric of the same target (Recall@20 <-> MRR@20; the
    order of tuning, Recall then MRR), then to the earlier baseline of :data:`BASELINE_ORDER` (others
    after it, by name). A metric no baseline has (missing, None or NaN) is absent.
    """
    best: dict[str, dict[str, Any]] = {}
    keys: dict[str, tuple[float, float]] = {}
    for name in sorted(figures or {}, key=_baseline_rank):
        for metric in metrics:
            value = _num(figures[name], metric)  # type: ignore[index]
            if value is None:
                continue
            companion = _num(figures[name], _COMPANION[metric])  # type: ignore[index]
            key = (value, -math.inf if companion is None else companion)
            if metric not in keys or key > keys[metric]:
                keys[metric], best[metric] = key, {"name": name, "value": value}
    return best


def fallback_baseline(figures: Mapping[str, Mapping[str, Any]] | None) -> str | None:
    """The baseline whose lists a night without a qualifying model publishes: the best on first-item
    Recall@20 (the table serves the first items of the next session; ties as in
    :func:`best_baselines`); None without one."""
    best = best_baselines(figures, (FIRST_RECALL,)).get(FIRST_RECALL)
    return None if best is None else str(best["name"])


def baseline_shortfalls(
    metrics: Mapping[str, Any] | None, best: Mapping[str, Mapping[str, Any]], tolerance: float = 0.0
) -> list[tuple[str, str]]:
    """``[(metric, why)]`` for each metric of :data:`BASELINE_METRICS` where ``metrics`` is below the
    best baseline minus ``tolerance`` (absolute); a metric the model lacks (None or NaN) fails, one
    no baseline has does not count."""
    out: list[tuple[str, str]] = []
    for metric in BASELINE_METRICS:
        if metric not in best:
            continue
        name, ref = best[metric]["name"], float(best[metric]["value"])
        value = _num(metrics, metric)
        if value is None:
            out.append((metric, f"no {metric} (best baseline {name} {ref:.4f})"))
        elif value < ref - tolerance - _EPS:
            out.append((metric, f"{metric} {value:.4f} < {name} {ref:.4f} - tolerance {tolerance:g}"))
    return out


def _baseline_summary(metrics: Mapping[str, Any], best: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{m} {_num(metrics, m):.4f} vs {best[m]['name']} {float(best[m]['value']):.4f}"
                     for m in BASELINE_METRICS if m in best)


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
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    baseline_tolerance: float = 0.0,
    new_on_baseline_events: Mapping[str, Any] | None = None,
    latest_night: dt.date | None = None,
) -> GateDecision:
    """Promote when the new model is at least as good as the best baseline and not worse than the champion.

    Baselines (``{name: metrics}``, tonight's split): on each of next-item and first-item Recall@20
    and MRR@20 the new model must reach the best baseline's figure minus ``baseline_tolerance``
    (absolute); a metric no baseline has does not count, one the model lacks fails. The model's
    figures for this rule are ``new_on_baseline_events`` (the same events as the baselines) when
    given, else ``new``. Champion: Recall@20 >= champion - recall_tolerance and
    MAE <= champion * (1 + mae_tolerance); a metric the champion lacks does not block, one the new
    model lacks (or NaN) does; no champion passes. A backfill (new run_date before the champion's or
    before ``latest_night``, the newest published night) never takes the alias from a later night,
    forced or not; ``below_baseline`` still says how it compares with the baselines. ``force``
    promotes whatever the figures.
    """
    if recall_tolerance < 0 or mae_tolerance < 0 or baseline_tolerance < 0:
        raise ValueError("tolerances must be >= 0")
    cv = champion_version
    best = best_baselines(baselines)
    versus_baselines = new if new_on_baseline_events is None else new_on_baseline_events
    short = baseline_shortfalls(versus_baselines, best, baseline_tolerance)
    below = tuple(metric for metric, _ in short)
    if new_run_date and champion is not None and champion_run_date and new_run_date < champion_run_date:
        return GateDecision(False, f"backfill for {new_run_date}: champion v{cv} is from the later night "
                                   f"{champion_run_date}", cv, below)
    if new_run_date and latest_night and new_run_date < latest_night:
        return GateDecision(False, f"backfill for {new_run_date}: the later night {latest_night} is "
                                   f"published", cv, below)
    if force:
        return GateDecision(True, "forced promotion (force_promote=true)", cv)
    baseline_why = "below the best baseline: " + "; ".join(why for _, why in short) if short else ""
    if champion is None:
        if short:
            return GateDecision(False, f"{baseline_why} (no champion yet)", cv, below)
        passed = f" and at least as good as the best baselines ({_baseline_summary(versus_baselines, best)})" \
            if best else ""
        return GateDecision(True, "first model: no champion yet" + passed, cv)
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
    if why or short:
        parts = ([baseline_why] if short else []) + ([f"worse than champion v{cv}: " + "; ".join(why)] if why else [])
        return GateDecision(False, "; ".join(parts), cv, below)
    fmt = f"{RECALL} {new_recall:.4f} vs {old_recall if old_recall is None else round(old_recall, 4)}, " \
          f"{MAE} {new_mae if new_mae is None else round(new_mae, 2)} vs " \
          f"{old_mae if old_mae is None else round(old_mae, 2)}"
    passed = f"; at least as good as the best baselines ({_baseline_summary(versus_baselines, best)})" if best else ""
    return GateDecision(True, f"not worse than champion v{cv} ({fmt}){passed}", cv)


@dataclass(frozen=True)
class Serving:
    """What a night publishes: ``version`` scores churn_risk (and recommendations when ``baseline`` is
    None); ``baseline`` names the baseline whose lists recommendations publishes instead."""

    version: int
    baseline: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_serving(
    *,
    version: int,
    promoted: bool,
    champion_before: int | None,
    champion_on_tonight: Mapping[str, Any] | None,
    baselines: Mapping[str, Mapping[str, Any]] | None,
    baseline_tolerance: float = 0.0,
    backfill: bool = False,
    below_baseline: tuple[str, ...] = (),
) -> Serving:
    """Which model and which list source the night publishes, after the gate.

    Promoted: tonight's ``version`` serves everything. A backfill is served by its own ``version``
    (a later night's champion never rewrites an older night): its lists when it is at least as good
    as the best baseline (``below_baseline`` empty), else :func:`fallback_baseline`'s with churn_risk
    from ``version``. Otherwise the champion serves, unless there is none or its figures on tonight's
    split (``champion_on_tonight``, from the head-to-head; None = not measured, the champion keeps
    serving) are below the best baseline by the gate's rule: then recommendations come from
    :func:`fallback_baseline` and churn_risk from the champion, else from tonight's (registered, not
    promoted) version.
    """
    if promoted:
        return Serving(version, None, f"tonight's v{version} is champion")
    fallback = fallback_baseline(baselines)
    if backfill:
        if not below_baseline or fallback is None:
            return Serving(version, None, f"backfill: tonight's v{version} serves its own night (the champion "
                                          f"alias stays)")
        return Serving(version, fallback, f"backfill below the best baseline ({', '.join(below_baseline)}): "
                                          f"recommendations from baseline {fallback}; churn_risk from "
                                          f"tonight's v{version}")
    if champion_before is None:
        if fallback is None:  # nothing to compare with: the only model there is
            return Serving(version, None, f"no champion and no baseline: tonight's v{version} (not promoted)")
        return Serving(version, fallback, f"no model qualifies (no champion): recommendations from baseline "
                                          f"{fallback}; churn_risk from tonight's v{version} (not promoted)")
    if champion_on_tonight is None or fallback is None:
        return Serving(champion_before, None, f"champion v{champion_before} keeps serving")
    short = baseline_shortfalls(champion_on_tonight, best_baselines(baselines), baseline_tolerance)
    if not short:
        return Serving(champion_before, None, f"champion v{champion_before} keeps serving (at least as good as "
                                              f"the best baselines on tonight's split)")
    return Serving(champion_before, fallback,
                   f"no model qualifies (champion v{champion_before} on tonight's split below the best baseline: "
                   + "; ".join(why for _, why in short)
                   + f"): recommendations from baseline {fallback}; churn_risk from champion v{champion_before}")


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


def mlflow_key(key: str) -> str:
    """A metric's name as MLflow and the version tags spell it (no ``@``)."""
    return key.replace("@", "_at_")


def mlflow_metrics(figures: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``figures`` (not booleans) under their MLflow names."""
    return {mlflow_key(k): float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


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


def find_version(client: Any, model_name: str, run_date: dt.date, fingerprint: str):  # noqa: ANN201
    """An existing version registered for the same night and the same inputs (re-runs reuse it)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        return None
    day = run_date.isoformat()  # the tag's spelling
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        tags = mv.tags or {}
        if tags.get(TAG_RUN_DATE) == day and tags.get(TAG_FINGERPRINT) == fingerprint:
            return mv
    return None


def version_tags(metrics: Mapping[str, Any], run_date: dt.date, fingerprint: str, dataset: str) -> dict[str, str]:
    """The tags of a new version: its night (ISO date), fingerprint, dataset and ``metric.<name>``."""
    tags = {TAG_RUN_DATE: run_date.isoformat(), TAG_FINGERPRINT: fingerprint, TAG_DATASET: dataset}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tags[f"metric.{mlflow_key(key)}"] = repr(float(value))
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
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    baseline_tolerance: float = 0.0,
    latest_night: dt.date | None = None,
) -> dict[str, Any]:
    """Register tonight's model (or reuse the version of an identical earlier attempt) and apply the gate.

    The alias is left alone: a version the gate promotes becomes the night's ``candidate`` (tag
    ``candidate_for``), which :func:`promote_candidate` makes champion once the night is published.
    ``latest_night`` (the newest published night of the dataset) makes an older night a backfill.

    ``log_model`` (called with no argument, returns a model URI) is only called when no version exists
    for this night and fingerprint, so a re-run of the same night registers nothing new.
    ``head_to_head`` (``{"champion_version", "new", "champion", "test_events"}``: both models' metrics
    on the same events of tonight's split) is what the gate compares when it is about the current
    champion; otherwise the gate compares with the champion's recorded metrics (another night's test
    split). ``baselines`` (``{name: metrics}`` on tonight's split) are compared with ``metrics``.
    Decision and serving choice are recorded as version tags; a re-run repeats them. Returns
    ``{"version", "reused", "promoted", "candidate", "reason", "below_baseline", "champion_before",
    "champion_after", "run_id", "best_baseline", "serving"}`` (``serving``: :class:`Serving` as a dict;
    ``champion_after``: the alias after this call, which this call never moves).
    """
    import mlflow

    existing = find_version(client, model_name, run_date, fingerprint)
    before = champion_version(client, model_name)
    before_v = int(before.version) if before is not None else None
    if existing is not None:
        version, reused = int(existing.version), True
        run_id = existing.run_id or run_id  # the run that produced the reused version
    else:
        uri = model_uri if model_uri is not None else log_model()
        mv = mlflow.register_model(uri, model_name, tags=version_tags(metrics, run_date, fingerprint, dataset))
        version, reused = int(mv.version), False
    tags = (existing.tags or {}) if existing is not None else {}
    if reused and "gate" in tags:
        # a re-run of the same night repeats the recorded decision and leaves the alias alone
        cb = tags.get("champion_before")
        below = tuple(m for m in tags.get("below_baseline", "").split(",") if m)
        decision = GateDecision(tags.get("promoted") == "true", tags["gate"], int(cb) if cb else None, below)
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
            baselines=baselines,
            baseline_tolerance=baseline_tolerance,
            new_on_baseline_events=metrics,  # the baselines ran on all of tonight's split, like `metrics`
            latest_night=latest_night,
        )
        if basis and not decision.reason.startswith(("forced", "backfill")):
            decision = GateDecision(decision.promote, decision.reason + basis, decision.champion_version,
                                    decision.below_baseline)
        if decision.promote:  # the alias moves in the night's last task, after publish and check
            client.set_model_version_tag(model_name, str(version), TAG_CANDIDATE, run_date.isoformat())
        client.set_model_version_tag(model_name, str(version), "gate", decision.reason[:5000])
        client.set_model_version_tag(model_name, str(version), "promoted", str(decision.promote).lower())
        client.set_model_version_tag(model_name, str(version), "champion_before", str(before_v or ""))
        client.set_model_version_tag(model_name, str(version), "below_baseline", ",".join(decision.below_baseline))
    if reused and "serving_version" in tags:
        serving = Serving(int(tags["serving_version"]), tags.get("serving_baseline") or None,
                          tags.get("serving", ""))
    else:
        cv = decision.champion_version
        on_tonight = head_to_head["champion"] if head_to_head and cv is not None \
            and head_to_head.get("champion_version") == cv else None
        serving = choose_serving(version=version, promoted=decision.promote, champion_before=cv,
                                 champion_on_tonight=on_tonight, baselines=baselines,
                                 baseline_tolerance=baseline_tolerance,
                                 backfill=decision.reason.startswith("backfill"),
                                 below_baseline=decision.below_baseline)
        client.set_model_version_tag(model_name, str(version), "serving_version", str(serving.version))
        client.set_model_version_tag(model_name, str(version), "serving_baseline", serving.baseline or "")
        client.set_model_version_tag(model_name, str(version), "serving", serving.reason[:5000])
    after = champion_version(client, model_name)
    return {
        "version": version,
        "reused": reused,
        "promoted": decision.promote,
        "candidate": version if decision.promote else None,
        "reason": decision.reason,
        "below_baseline": list(decision.below_baseline),
        "champion_before": decision.champion_version,
        "champion_after": int(after.version) if after is not None else None,
        "run_id": run_id,
        "best_baseline": best_baselines(baselines),
        "serving": serving.to_dict(),
    }


def promote_candidate(
    client: Any,
    model_name: str,
    *,
    version: int,
    run_date: dt.date,
    champion_before: int | None,
    latest_night: dt.date | None,
) -> dict[str, Any]:
    """Move ``champion`` to the night's candidate ``version``; called once the night is published and
    checked. Idempotent. The alias stays when the night is a backfill (``latest_night``, the newest
    published night, or the champion's run date is later) or when the champion is no longer
    ``champion_before``, the version the gate compared with. Returns ``{"moved", "champion_before",
    "champion_after", "reason"}``.
    """
    current = champion_version(client, model_name)
    cur_v = int(current.version) if current is not None else None
    cur_date = (current.tags or {}).get(TAG_RUN_DATE) if current is not None else None

    def out(moved: bool, reason: str) -> dict[str, Any]:
        return {"moved": moved, "champion_before": cur_v, "champion_after": version if moved else cur_v,
                "reason": reason}

    if cur_v == version:
        return out(False, f"v{version} is already champion")
    if latest_night is not None and run_date < latest_night:
        return out(False, f"backfill for {run_date}: the later night {latest_night} is published; "
                          f"the alias stays at v{cur_v}")
    if cur_date and run_date < dt.date.fromisoformat(cur_date):
        return out(False, f"backfill for {run_date}: champion v{cur_v} is from the later night {cur_date}")
    if cur_v != champion_before:
        return out(False, f"the champion moved from v{champion_before} to v{cur_v} after the gate ran; "
                          f"the alias stays (re-run register to compare with v{cur_v})")
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return out(True, f"v{version} is champion (was v{cur_v})")


def _finite(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def baseline_figures(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """The four figures (next-item and first-item Recall@20, MRR@20) of every ranking baseline.

    A baseline without any of them (return-time ones: medians, Hawkes) is left out; a figure it lacks
    (missing or not finite) is None.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name, metrics in results.items():
        figures = {k: _finite(metrics.get(k)) for k in BASELINE_METRICS}
        if any(v is not None for v in figures.values()):
            out[str(name)] = figures
    return out


def head_to_head(settings: Any, params: Any, run_date: dt.date, gate_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """Tonight's model and the current champion on the same events of tonight's test split.

    The champion may come from an earlier night with other dense ids, so both models see tonight's
    history restricted to the users and items the champion knows, each in its own ids. None when
    there is no champion or nothing in common (the gate then uses the champion's recorded metrics).
    """
    import mlflow

    from contract import columns as C
    from thrnn.checkpoint import load_run
    from thrnn.device import resolve_device
    from thrnn.evaluate import metrics_from_predictions
    from thrnn.inference import predict_test
    from thrnn.io import read_split

    from .pyfunc import history_from_split, split_in_model_space

    paths = settings.run_paths(params.dataset, run_date)
    from .settings import registered_model_name

    name = registered_model_name(params.dataset)
    client = setup_mlflow(settings.tracking_uri)
    champ = champion_version(client, name)
    if champ is None:
        return None
    try:
        wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{champ.version}").unwrap_python_model()
        split = read_split(paths.data)
        history = history_from_split(split)
        common = history[history[C.USER_KEY].isin(wrapper.users[C.USER_KEY])
                         & history[C.ITEM_KEY].isin(wrapper.items[C.ITEM_KEY])]
        champ_split, _ = split_in_model_space(common, wrapper.items, wrapper.users)
        new_split, _ = split_in_model_space(common, split.items, split.users)
        if champ_split.test.empty:
            return None
        device = resolve_device(settings.device)
        new_model, new_cfg = load_run(paths.train, device=device)
        new = metrics_from_predictions(predict_test(new_model, new_split, new_cfg, device=device))
        old = metrics_from_predictions(predict_test(wrapper.model, champ_split, wrapper.cfg, device=device))
    except Exception:  # the gate falls back to recorded metrics; never lose the night over this
        log.exception("head-to-head with champion v%s failed; the gate uses its recorded metrics", champ.version)
        return None
    return {"champion_version": int(champ.version), "test_events": len(champ_split.test),
            "new": {k: new.get(k) for k in gate_keys}, "champion": {k: old.get(k) for k in gate_keys}}


def gate_night(settings: PipelineSettings, params: RunParams, run_date: dt.date, trained: TrainState,
               evaluated: EvaluateState, latest_night: dt.date | None) -> dict[str, Any]:
    """:func:`register_and_gate` for the night's trained model (logged as a pyfunc only when no version
    of the night and fingerprint exists) with its evaluation and the night's params."""
    from .pyfunc import log_pyfunc
    from .settings import registered_model_name

    paths = settings.run_paths(params.dataset, run_date)
    return register_and_gate(
        setup_mlflow(settings.tracking_uri), registered_model_name(params.dataset), model_uri=None,
        run_id=trained.mlflow_run_id, metrics=evaluated.metrics, run_date=run_date,
        fingerprint=trained.fingerprint, dataset=params.dataset, recall_tolerance=params.recall_tolerance,
        mae_tolerance=params.mae_tolerance, force=params.force_promote,
        log_model=lambda: log_pyfunc(paths, trained.mlflow_run_id, settings.tracking_uri),
        head_to_head=evaluated.champion_head_to_head, baselines=evaluated.gate_figures(),
        baseline_tolerance=params.baseline_tolerance, latest_night=latest_night)


def promote_night(settings: PipelineSettings, params: RunParams, run_date: dt.date, registered: RegisterState,
                  latest_night: dt.date | None) -> dict[str, Any]:
    """:func:`promote_candidate` for the night's candidate (``registered.candidate``, not None)."""
    from .settings import registered_model_name

    return promote_candidate(
        setup_mlflow(settings.tracking_uri), registered_model_name(params.dataset), version=int(registered.candidate),
        run_date=run_date, champion_before=registered.champion_before, latest_night=latest_night)
