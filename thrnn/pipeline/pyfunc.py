"""The THRNN model as an MLflow pyfunc, self-contained: weights, config and its own id vocabulary.

Dense ids (``user_id``, ``item_id``) are assigned afresh by every night's sessionize run, so a model
from an earlier night cannot read tonight's ids. The pyfunc therefore speaks *keys*: its input is a
sessionized history with ``user_key`` / ``item_key`` (:data:`HISTORY_COLUMNS`), which it maps into the
ids the model was trained with; items the model never saw are dropped from the history and users it
never saw are not scored (both counted in :attr:`ThrnnPyfunc.last_unknown`). Output rows carry keys
and item names.

``predict(history, params={"run_date": "YYYY-MM-DD", "top_k": 20, "output": "recommendations"})``
returns the top-K per user (``output="churn"``: one return-time / churn row per user). ``event_time``
is UTC; naive values are read as UTC (MLflow's schema enforcement refuses tz-aware ones).
"""

from __future__ import annotations

import ast
import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from contract import columns as C
from thrnn.io import Split, read_split

HISTORY_COLUMNS = [
    C.USER_KEY, C.SESSION_INDEX, C.POSITION, C.ITEM_KEY, C.EVENT_TIME, C.GAP_BEFORE_SECONDS, C.IS_CONTINUATION,
]
IN_TEST = "in_test"  # optional history column: the event belongs to the test part of the split
ARTIFACT_MODEL = "model_dir"
ARTIFACT_ITEMS = "items"
ARTIFACT_USERS = "users"
DEFAULT_PARAMS: dict[str, Any] = {"run_date": "", "top_k": 20, "output": "recommendations"}
REPO = Path(__file__).resolve().parents[2]
# Packages the logged model may carry code of: the model and the data contract, never the Spark jobs.
SERVING_PACKAGES = ("thrnn", "contract")


def history_from_split(split: Split) -> pd.DataFrame:
    """Tonight's events (train and test) with keys instead of dense ids; ``in_test`` marks test/."""
    events = pd.concat([split.train.assign(**{IN_TEST: False}), split.test.assign(**{IN_TEST: True})],
                       ignore_index=True)
    events = events.merge(split.users[[C.USER_ID, C.USER_KEY]], on=C.USER_ID, how="left", validate="m:1")
    events = events.merge(split.items[[C.ITEM_ID, C.ITEM_KEY]], on=C.ITEM_ID, how="left", validate="m:1")
    # MLflow's schema enforcement takes naive datetimes only: event_time is naive UTC in the pyfunc
    events[C.EVENT_TIME] = pd.to_datetime(events[C.EVENT_TIME], utc=True).dt.tz_localize(None)
    return events.sort_values([C.USER_KEY, C.SESSION_INDEX, C.POSITION], kind="stable")[
        HISTORY_COLUMNS + [IN_TEST]
    ].reset_index(drop=True)


def split_in_model_space(
    history: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> tuple[Split, dict[str, int]]:
    """Map a keyed history into the model's ids; drop unknown items/users and renumber what is left."""
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks column(s) {missing}; expected {HISTORY_COLUMNS}")
    ev = history.copy()
    if IN_TEST not in ev.columns:
        ev[IN_TEST] = False
    ev = ev.merge(users[[C.USER_KEY, C.USER_ID]], on=C.USER_KEY, how="left")
    ev = ev.merge(items[[C.ITEM_KEY, C.ITEM_ID]], on=C.ITEM_KEY, how="left")
    unknown = {
        "unknown_users": int(ev.loc[ev[C.USER_ID].isna(), C.USER_KEY].nunique()),
        "unknown_item_events": int(ev[C.ITEM_ID].isna().sum()),
    }
    ev = ev[ev[C.USER_ID].notna() & ev[C.ITEM_ID].notna()].copy()
    ev = ev.sort_values([C.USER_ID, C.SESSION_INDEX, C.POSITION], kind="stable")
    # renumber after the drops: positions within a session, sessions within a user
    ev[C.POSITION] = ev.groupby([C.USER_ID, C.SESSION_INDEX]).cumcount()
    ev[C.SESSION_INDEX] = ev.groupby(C.USER_ID)[C.SESSION_INDEX].rank(method="dense").astype(int) - 1
    ev.loc[ev[C.SESSION_INDEX] == 0, C.GAP_BEFORE_SECONDS] = None
    ev[C.SESSION_ID] = ev.groupby([C.USER_ID, C.SESSION_INDEX], sort=True).ngroup()
    ev[C.EVENT_TIME] = pd.to_datetime(ev[C.EVENT_TIME], utc=True)
    types = {C.USER_ID: "int32", C.SESSION_ID: "int64", C.SESSION_INDEX: "int32", C.POSITION: "int16",
             C.ITEM_ID: "int32", C.GAP_BEFORE_SECONDS: "float64", C.IS_CONTINUATION: "bool"}
    ev = ev.astype(types)
    train = ev[~ev[IN_TEST].astype(bool)][C.EVENT_COLUMNS].reset_index(drop=True)
    test = ev[ev[IN_TEST].astype(bool)][C.EVENT_COLUMNS].reset_index(drop=True)
    return Split(train, test, items.reset_index(drop=True), users.reset_index(drop=True), {}), unknown


class ThrnnPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper; artifacts: ``model_dir`` (model.pt, config.json), ``items``, ``users`` (Parquet)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.model: Any = None
        self.cfg: Any = None
        self.items: pd.DataFrame | None = None
        self.users: pd.DataFrame | None = None
        self.last_unknown: dict[str, int] = {}

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts[ARTIFACT_MODEL], context.artifacts[ARTIFACT_ITEMS],
                  context.artifacts[ARTIFACT_USERS])

    def load(self, model_dir: str | Path, items_path: str | Path, users_path: str | Path) -> ThrnnPyfunc:
        from thrnn.checkpoint import load_run
        from thrnn.device import resolve_device

        self.model, self.cfg = load_run(model_dir, device=resolve_device(self.device))
        self.items = pd.read_parquet(items_path)
        self.users = pd.read_parquet(users_path)
        return self

    def score(
        self,
        history: pd.DataFrame,
        *,
        run_date: dt.date,
        top_k: int = 20,
        horizons_hours: tuple[float, ...] = (24, 168, 720),
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(recommendations, churn) keyed by ``user_key`` / ``item_key`` for every user of ``history``."""
        from thrnn.device import resolve_device
        from thrnn.scoring import score_users

        if self.model is None or self.items is None or self.users is None:
            raise RuntimeError("model not loaded")
        split, self.last_unknown = split_in_model_space(history, self.items, self.users)
        recs, churn = score_users(self.model, split, self.cfg, run_date=run_date, top_k=top_k,
                                  horizons_hours=tuple(horizons_hours), device=str(resolve_device(self.device)))
        users = self.users[[C.USER_ID, C.USER_KEY]]
        items = self.items[[C.ITEM_ID, C.ITEM_KEY, C.ITEM_NAME]]
        recs = recs.merge(users, on=C.USER_ID, how="left", validate="m:1").merge(
            items, on=C.ITEM_ID, how="left", validate="m:1")
        recs = recs[[C.USER_KEY, "rank", C.ITEM_KEY, C.ITEM_NAME, "score"]]
        churn = churn.merge(users, on=C.USER_ID, how="left", validate="m:1").drop(columns=[C.USER_ID])
        churn = churn[[C.USER_KEY] + [c for c in churn.columns if c != C.USER_KEY]]
        order = [C.USER_KEY, "rank"]
        return (recs.sort_values(order).reset_index(drop=True),
                churn.sort_values(C.USER_KEY).reset_index(drop=True))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = {**DEFAULT_PARAMS, **(params or {})}
        if p["output"] not in ("recommendations", "churn"):
            raise ValueError(f"params.output must be 'recommendations' or 'churn', got {p['output']!r}")
        if p["run_date"]:
            run_date = dt.date.fromisoformat(str(p["run_date"]))
        else:  # the day after the last event of the history: deterministic, never the wall clock
            run_date = (pd.to_datetime(model_input[C.EVENT_TIME], utc=True).max() + pd.Timedelta(days=1)).date()
        recs, churn = self.score(model_input, run_date=run_date, top_k=int(p["top_k"]))
        return recs if p["output"] == "recommendations" else churn


def _vocab_files(paths: Any) -> tuple[Path, Path]:
    """items/users of the split as single Parquet files: the pyfunc's own id vocabulary."""
    out = paths.root / "model_vocab"
    out.mkdir(parents=True, exist_ok=True)
    split = read_split(paths.data)
    items, users = out / "items.parquet", out / "users.parquet"
    split.items.to_parquet(items, index=False)
    split.users.to_parquet(users, index=False)
    return items, users


def log_pyfunc(paths: Any, run_id: str, tracking_uri: str) -> str:
    """Log ``<run>/train`` as a pyfunc (pickle, signature, input example) to the MLflow run; return its URI."""
    import mlflow
    from mlflow.models import infer_signature

    items, users = _vocab_files(paths)
    local = ThrnnPyfunc(device="cpu").load(paths.train, items, users)
    history = history_from_split(read_split(paths.data))
    example_users = sorted(history[C.USER_KEY].unique())[:2]
    example = history[history[C.USER_KEY].isin(example_users)].drop(columns=["in_test"]).reset_index(drop=True)
    day = (example[C.EVENT_TIME].max() + dt.timedelta(days=1)).date().isoformat()
    example_params = {**DEFAULT_PARAMS, "run_date": day}
    output = local.predict(None, example, example_params)
    signature = infer_signature(example, output, params=DEFAULT_PARAMS)
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as code, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ThrnnPyfunc(device="cpu"),
            artifacts={ARTIFACT_MODEL: str(paths.train), ARTIFACT_ITEMS: str(items), ARTIFACT_USERS: str(users)},
            signature=signature,
            input_example=(example, example_params),
            code_paths=stage_serving_code(Path(code)),
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def serving_modules(root: Path = REPO, start: str = __name__) -> list[str]:
    """Modules of :data:`SERVING_PACKAGES` that ``start`` imports, directly or not, at module level or
    inside functions (read from the source, nothing is imported): the code the pyfunc needs to load and
    score. The pipeline's tasks, training, evaluation and the baselines are not among them."""

    def source(name: str) -> Path | None:
        base = root.joinpath(*name.split("."))
        return next((p for p in (base / "__init__.py", base.with_suffix(".py")) if p.is_file()), None)

    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        path = source(name)
        if name in seen or path is None or name.split(".")[0] not in SERVING_PACKAGES:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module or ""
                base = base.strip(".")
                todo += [base, *(f"{base}.{alias.name}" for alias in node.names)]  # a name may be a module
    return sorted(seen)


def stage_serving_code(dest: Path, root: Path = REPO) -> list[str]:
    """Copy the :func:`serving_modules` into ``dest`` (one folder per package) for ``code_paths``."""
    for name in serving_modules(root):
        src = root.joinpath(*name.split("."))
        src = src / "__init__.py" if src.is_dir() else src.with_suffix(".py")
        target = dest / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return [str(dest / pkg) for pkg in SERVING_PACKAGES]


def _pip_requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc (given explicitly: inferring them reloads the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "torch", "pandas", "numpy", "pyarrow", "scipy"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out
