"""Failures, re-runs and backfills of whole nights: what the tables and the champion alias become.

Real task functions (validate ... promote) on the hand-made split of the gate tests, a real MLflow
registry on SQLite and a real DuckDB file. ``baseline_tolerance`` 1 lets every model past the
baselines, so each night that is not a backfill has a candidate.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from typing import TypeVar

import pandas as pd
import pytest

from tests.pipeline.conftest import GATE_CONF as CONF
from tests.pipeline.conftest import GATE_DATASET as DATASET
from tests.pipeline.conftest import gate_sessions
from thrnn.io import split_from_sessions
from thrnn.pipeline import registry as R
from thrnn.pipeline import tasks
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError
from thrnn.pipeline.params import validate_params
from thrnn.pipeline.settings import PipelineSettings, registered_model_name
from thrnn.pipeline.states import EvaluateState, PromoteState, RegisterState, ScoreState, TaskState

pytestmark = [pytest.mark.slow]

D0, D1, D2 = dt.date(2026, 4, 1), dt.date(2026, 4, 2), dt.date(2026, 4, 3)
NIGHT = {**CONF, "baseline_tolerance": 1.0}
UP_TO_SCORE = (tasks.validate, tasks.train, tasks.evaluate, tasks.register, tasks.score)
AFTER_SCORE = (tasks.publish, tasks.check, tasks.promote)


def _steps(settings, conf: dict, day: dt.date, steps) -> None:
    params = validate_params(conf)
    for step in steps:
        step(settings, params, day)


def _tables(settings) -> dict[str, pd.DataFrame]:
    """Every published row, in key order."""
    wh = W.connect(settings.warehouse)
    cols = {t: ", ".join(c) for t, c in W.TABLE_COLUMNS.items()}
    return {t: wh.query(f"SELECT {cols[t]} FROM {t} ORDER BY {', '.join(W.TABLE_ORDER[t])}") for t in cols}


def _champion(settings) -> int | None:
    mv = R.champion_version(R.setup_mlflow(settings.tracking_uri), registered_model_name(DATASET))
    return None if mv is None else int(mv.version)


S = TypeVar("S", bound=TaskState)


def _state(settings, day: dt.date, state: type[S]) -> S:
    return state.load(settings.run_paths(DATASET, day))


def _break_scores(settings, day: dt.date) -> None:
    """A churn probability above 1 in the night's scores: the night's contract refuses it."""
    path = settings.run_paths(DATASET, day).scores / "churn_risk.parquet"
    churn = pd.read_parquet(path)
    churn.loc[0, "p_return_30d"] = 1.5
    churn.to_parquet(path, index=False)


def _d2_published(settings) -> None:
    """Night D2 published with v2 champion (the first test leaves it so; alone, run it here)."""
    if _champion(settings) != 2:
        _steps(settings, NIGHT, D2, UP_TO_SCORE + AFTER_SCORE)
    assert _champion(settings) == 2


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Night D1 published (v1 champion); the same split is ready for D0 and D2."""
    import mlflow

    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path_factory.mktemp("nights")),
                                          "THRNN_DEVICE": "cpu"})
    split_from_sessions(gate_sessions(), settings.run_paths(DATASET, D1).data)
    for day in (D0, D2):
        shutil.copytree(settings.run_paths(DATASET, D1).data, settings.run_paths(DATASET, day).data)
    try:
        _steps(settings, NIGHT, D1, UP_TO_SCORE + AFTER_SCORE)
        assert _champion(settings) == 1
        yield settings
    finally:
        mlflow.set_tracking_uri(None)


def test_a_failing_publish_leaves_the_champion_and_the_tables(home):
    settings = home
    before = _tables(settings)
    _steps(settings, NIGHT, D2, UP_TO_SCORE)
    reg = _state(settings, D2, RegisterState)
    assert (reg.version, reg.promoted, reg.candidate) == (2, True, 2)
    assert _champion(settings) == 1  # the gate chose v2, but nothing is published yet
    _break_scores(settings, D2)
    with pytest.raises(ContractError, match="probabilities outside"):
        _steps(settings, NIGHT, D2, AFTER_SCORE)
    assert _champion(settings) == 1
    for table, frame in _tables(settings).items():
        pd.testing.assert_frame_equal(frame, before[table])
    # a failed publish of a night that was published before keeps that night's rows too
    _steps(settings, NIGHT, D1, (tasks.score,))
    _break_scores(settings, D1)
    with pytest.raises(ContractError):
        _steps(settings, NIGHT, D1, (tasks.publish,))
    for table, frame in _tables(settings).items():
        pd.testing.assert_frame_equal(frame, before[table])
    # promote refuses to run before publish and check have succeeded for the night
    with pytest.raises(RuntimeError, match="publish and then check must succeed"):
        _steps(settings, NIGHT, D2, (tasks.promote,))
    # the retry: the alias moves in the last task, once the night is published and checked
    _steps(settings, NIGHT, D2, (tasks.score,) + AFTER_SCORE)
    assert _champion(settings) == 2
    assert _state(settings, D2, PromoteState).moved is True
    assert set(_tables(settings)[W.RECOMMENDATIONS]["run_date"].astype(str)) == {str(D1), str(D2)}


def test_rerunning_an_old_night_never_uses_the_champion_of_now(home):
    settings = home
    _d2_published(settings)
    before = _tables(settings)
    # a register state of an older release (no `serving`): the night's recorded decision, not the alias
    path = settings.run_paths(DATASET, D1).state / "register.json"
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in recorded.items() if k not in ("serving", "candidate")}))
    _steps(settings, NIGHT, D1, (tasks.score,))
    assert _state(settings, D1, ScoreState).scored_with_version == 1
    path.write_text(json.dumps(recorded))

    day2 = {t: f[f["run_date"].astype(str) == str(D2)].reset_index(drop=True) for t, f in before.items()}
    # a re-run of D1 with other settings (another seed): a new model, a backfill now that D2 is out
    _steps(settings, {**NIGHT, "seed": 2, "force_promote": True}, D1, UP_TO_SCORE + AFTER_SCORE)
    reg = _state(settings, D1, RegisterState)
    assert (reg.version, reg.promoted, reg.candidate) == (3, False, None)
    assert reg.reason == f"backfill for {D1}: champion v2 is from the later night {D2}"
    assert reg.serving["version"] == 3  # its own model, never the champion v2 of D2
    after = _tables(settings)
    rec1 = after[W.RECOMMENDATIONS][after[W.RECOMMENDATIONS]["run_date"].astype(str) == str(D1)]
    assert set(rec1["model_version"].dropna()) <= {3} and set(rec1["source"]) <= {"thrnn-gate/3"} | set(
        _state(settings, D1, EvaluateState).gate_baselines)
    churn1 = after[W.CHURN_RISK][after[W.CHURN_RISK]["run_date"].astype(str) == str(D1)]
    assert set(churn1["model_version"]) == {3}
    assert _champion(settings) == 2 and _state(settings, D1, PromoteState).candidate is None
    for table, frame in after.items():  # D2 untouched
        got = frame[frame["run_date"].astype(str) == str(D2)].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, day2[table], check_dtype=False)

    # the same for a backfill's state of an older release: its own model
    path.write_text(json.dumps({k: v for k, v in _state(settings, D1, RegisterState).to_dict().items()
                                if k not in ("serving", "candidate")}))
    _steps(settings, {**NIGHT, "seed": 2}, D1, (tasks.score,))
    assert _state(settings, D1, ScoreState).scored_with_version == 3


def test_a_backfill_never_moves_the_alias_nor_rewrites_other_nights(home):
    settings = home
    _d2_published(settings)
    before = _tables(settings)
    # forced, and better than anything: still a backfill (D2 is published and champion)
    _steps(settings, {**NIGHT, "force_promote": True}, D0, UP_TO_SCORE + AFTER_SCORE)
    reg = _state(settings, D0, RegisterState)
    assert not reg.promoted and reg.candidate is None and reg.reason.startswith(f"backfill for {D0}")
    assert reg.serving["version"] == reg.version  # served by its own model
    assert _champion(settings) == 2
    after = _tables(settings)
    for table, frame in after.items():
        others = frame[frame["run_date"].astype(str) != str(D0)].reset_index(drop=True)
        pd.testing.assert_frame_equal(others, before[table], check_dtype=False)
        assert (frame["run_date"].astype(str) == str(D0)).any(), table
    churn0 = after[W.CHURN_RISK][after[W.CHURN_RISK]["run_date"].astype(str) == str(D0)]
    assert set(churn0["model_version"]) == {reg.version}
