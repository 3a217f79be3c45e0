"""The champion gate: pure decision rules, then the real MLflow registry (SQLite store)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from thrnn.pipeline import registry as R

GOOD = {"recall@20": 0.30, "mae_hours": 40.0}


@pytest.mark.parametrize(
    ("new", "kw", "promote", "reason"),
    [
        (GOOD, {}, True, "not worse than champion v3"),
        ({"recall@20": 0.30, "mae_hours": 40.0}, {}, True, "not worse"),  # equal is not worse
        ({"recall@20": 0.2999, "mae_hours": 40.0}, {}, False, "recall@20 0.2999 < champion 0.3000"),
        ({"recall@20": 0.29, "mae_hours": 40.0}, {"recall_tolerance": 0.01}, True, "not worse"),
        ({"recall@20": 0.289, "mae_hours": 40.0}, {"recall_tolerance": 0.01}, False, "recall@20"),
        ({"recall@20": 0.35, "mae_hours": 40.1}, {}, False, "mae_hours 40.10 > champion 40.00"),
        ({"recall@20": 0.35, "mae_hours": 42.0}, {"mae_tolerance": 0.05}, True, "not worse"),
        ({"recall@20": 0.35, "mae_hours": 42.1}, {"mae_tolerance": 0.05}, False, "mae_hours"),
        ({"recall@20": float("nan"), "mae_hours": 1.0}, {}, False, "new model has no recall@20"),
        ({"recall@20": 0.35}, {}, False, "new model has no mae_hours"),
        ({"recall@20": 0.0, "mae_hours": 1e9}, {"force": True}, True, "forced"),
        (GOOD, {"new_run_date": dt.date(2026, 1, 1), "champion_run_date": dt.date(2026, 1, 5)}, False, "backfill"),
    ],
)
def test_decide(new, kw, promote, reason):
    d = R.decide(new, GOOD, champion_version=3, **kw)
    assert d.promote is promote
    assert reason in d.reason
    assert d.champion_version == 3


def test_first_model_and_champion_without_a_metric():
    assert R.decide({"recall@20": 0.0}, None).reason == "first model: no champion yet"
    assert R.decide({"recall@20": 0.1, "mae_hours": 9.0}, {"recall@20": 0.1}).promote
    with pytest.raises(ValueError):
        R.decide(GOOD, GOOD, recall_tolerance=-1)


class Constant:
    """A tiny real pyfunc: scores every input row with a constant."""

    def __new__(cls, value: float):
        import mlflow.pyfunc

        class _Model(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return pd.DataFrame({"score": [value] * len(model_input)})

        return _Model()


@pytest.fixture
def client(tmp_path):
    import mlflow

    client = R.setup_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = R.ensure_experiment("thrnn-demo", (tmp_path / "artifacts").as_uri())
    assert R.ensure_experiment("thrnn-demo", "ignored") == exp
    mlflow.set_experiment(experiment_id=exp)
    yield client
    mlflow.set_tracking_uri(None)


def _night(client, day: str, metrics: dict, value: float, fingerprint: str | None = None, **kw) -> dict:
    import mlflow

    calls = []

    def log_model() -> str:
        calls.append(day)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="model", python_model=Constant(value),
                                           pip_requirements=["mlflow"])
        return info.model_uri

    with mlflow.start_run() as run:
        run_id = run.info.run_id
    out = R.register_and_gate(client, "thrnn-demo", model_uri=None, run_id=run_id, metrics=metrics,
                              run_date=dt.date.fromisoformat(day), fingerprint=fingerprint or f"fp-{day}",
                              dataset="demo", log_model=log_model, **kw)
    assert out["champion_after"] == out["champion_before"]  # register never moves the alias
    out["logged"] = len(calls)
    if out["candidate"] is not None:  # what the night's last task does once it is published and checked
        moved = R.promote_candidate(client, "thrnn-demo", version=out["candidate"],
                                    run_date=dt.date.fromisoformat(day), champion_before=out["champion_before"],
                                    latest_night=None)
        out["champion_after"] = moved["champion_after"]
    return out


@pytest.mark.slow
def test_registry_gate_end_to_end(client):
    import mlflow

    first = _night(client, "2026-01-01", GOOD, 1.0)
    assert (first["version"], first["promoted"], first["champion_after"], first["logged"]) == (1, True, 1, 1)
    assert first["reason"] == "first model: no champion yet"

    # a deliberately worse model is registered (and tagged) but does not move the champion
    worse = _night(client, "2026-01-02", {"recall@20": 0.10, "mae_hours": 80.0}, 2.0)
    assert (worse["version"], worse["promoted"], worse["champion_before"], worse["champion_after"]) == (2, False, 1, 1)
    mv = client.get_model_version("thrnn-demo", "2")
    assert mv.tags["run_date"] == "2026-01-02" and mv.tags["promoted"] == "false"
    assert float(mv.tags["metric.recall_at_20"]) == 0.10
    champ = mlflow.pyfunc.load_model("models:/thrnn-demo@champion")
    assert champ.predict(pd.DataFrame({"x": [1, 2]}))["score"].tolist() == [1.0, 1.0]

    # re-running the same night with the same inputs registers nothing and repeats the decision
    again = _night(client, "2026-01-02", {"recall@20": 0.10, "mae_hours": 80.0}, 2.0, fingerprint="fp-2026-01-02")
    assert (again["version"], again["reused"], again["logged"], again["promoted"]) == (2, True, 0, False)
    assert again["reason"] == worse["reason"]

    # a better one moves it; forcing moves it whatever the metrics
    better = _night(client, "2026-01-03", {"recall@20": 0.31, "mae_hours": 39.0}, 3.0)
    assert (better["version"], better["promoted"], better["champion_after"]) == (3, True, 3)
    forced = _night(client, "2026-01-04", {"recall@20": 0.0, "mae_hours": 999.0}, 4.0, force=True)
    assert (forced["promoted"], forced["champion_after"]) == (True, 4)
    assert mlflow.pyfunc.load_model("models:/thrnn-demo@champion").predict(
        pd.DataFrame({"x": [0]}))["score"].tolist() == [4.0]

    # the gate prefers a head-to-head on tonight's split when it is about the current champion ...
    versus = {"champion_version": 4, "new": {"recall@20": 0.5, "mae_hours": 1.0},
              "champion": {"recall@20": 0.4, "mae_hours": 2.0}, "test_events": 10}
    n5 = _night(client, "2026-01-05", {"recall@20": 0.0, "mae_hours": 2000.0}, 5.0, head_to_head=versus)
    assert (n5["version"], n5["promoted"], n5["champion_after"]) == (5, True, 5)
    assert n5["reason"].endswith("[both on tonight's split, 10 test events]")
    # ... and ignores one about another version (v5 is champion now: recorded MAE 2000 < 2500)
    n6 = _night(client, "2026-01-06", {"recall@20": 0.0, "mae_hours": 2500.0}, 6.0, head_to_head=versus)
    assert (n6["promoted"], n6["champion_after"]) == (False, 5)
    assert "mae_hours 2500.00 > champion 2000.00" in n6["reason"]
    assert n6["reason"].endswith("[champion's recorded metrics, its own night]")
