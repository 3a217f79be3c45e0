"""Numbers that must stay finite: DAG params, the non-finite-step limit of training, scored probabilities."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_split
from thrnn.config import TrainConfig, config_for
from thrnn.data import load_sessions
from thrnn.pipeline.params import ParamError, validate_params
from thrnn.scoring import score_users
from thrnn.train import _Trainer, train_sessions

torch.set_num_threads(1)
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("raw", [
    {"max_bad_fraction": NAN}, {"max_bad_fraction": INF},
    {"recall_tolerance": NAN}, {"baseline_tolerance": NAN}, {"mae_tolerance": INF}, {"mae_tolerance": NAN},
    {"horizons_hours": [24, NAN, 720]}, {"horizons_hours": [24, 168, INF]}, {"risk_thresholds": [NAN, 0.7]},
    {"lr": NAN}, {"lr": INF}, {"loss_time": INF}, {"decay": NAN}, {"gap_exponent": -INF},
])
def test_dag_params_refuse_non_finite_numbers(raw):
    with pytest.raises(ParamError, match="finite"):
        validate_params(raw)
    with pytest.raises(ParamError, match="session_gap_seconds"):  # an integer param: inf is not one
        validate_params({"session_gap_seconds": INF})


@pytest.mark.parametrize("name", ["lr", "time_lr", "dropout", "gap_upper_hours", "w_init", "grad_clip"])
def test_train_config_refuses_non_finite_numbers(name):
    for value in (NAN, INF, -INF):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            TrainConfig(**{name: value})


def _cfg(**kw) -> TrainConfig:
    base = {"item_embedding": 8, "user_embedding": 4, "gap_embedding": 3, "epochs": 1, "batch_size": 4,
            "device": "cpu", "seed": 7, "lr_schedule": "constant"}
    return config_for("paper-lastfm", "thrnn", **{**base, **kw})


@pytest.fixture
def data():
    return load_sessions(tiny_split(n_users=8))


class BadSteps:
    """Training steps report a non-finite loss when ``rule(i)`` holds, ``i`` counting the steps since
    the rule was set (from 0)."""

    def __init__(self) -> None:
        self.set(lambda i: False)

    def set(self, rule) -> None:
        self.rule, self.calls = rule, 0


@pytest.fixture
def bad_steps(monkeypatch) -> BadSteps:
    bad = BadSteps()
    step = _Trainer.step

    def flaky(self, rows, rows_cpu, state):
        parts, ok = step(self, rows, rows_cpu, state)
        bad.calls += 1
        return (parts, torch.zeros((), dtype=torch.bool)) if bad.rule(bad.calls - 1) else (parts, ok)

    monkeypatch.setattr(_Trainer, "step", flaky)
    return bad


def _batches(data, tmp_path) -> int:
    return train_sessions(data, tmp_path / "probe", _cfg(), progress=False)["epochs"][0]["batches"]


def test_the_bad_step_limit_counts_over_the_whole_run(data, bad_steps, tmp_path):
    n = _batches(data, tmp_path)
    bad_steps.set(lambda i: i % n == 0)  # the first step of every epoch: 1 per epoch, 3 in the run
    with pytest.raises(FloatingPointError, match=r"3 steps .* in this run .*max_bad_steps=2"):
        train_sessions(data, tmp_path / "run", _cfg(epochs=3, max_bad_steps=2), progress=False)
    bad_steps.set(lambda i: i % n == 0)
    history = train_sessions(data, tmp_path / "ok", _cfg(epochs=3, max_bad_steps=3), progress=False)
    assert history["bad_steps"] == 3 and [e["bad_steps"] for e in history["epochs"]] == [1, 1, 1]


def test_the_bad_step_count_survives_resume(data, bad_steps, tmp_path):
    bad_steps.set(lambda i: i < 2)  # two in epoch 1
    first = train_sessions(data, tmp_path / "run", _cfg(epochs=1, max_bad_steps=2), progress=False)
    assert first["bad_steps"] == 2
    bad_steps.set(lambda i: i == 0)  # one in epoch 2, the first of the resumed run
    with pytest.raises(FloatingPointError, match=r"3 steps .* in this run"):
        train_sessions(data, tmp_path / "run", _cfg(epochs=2, max_bad_steps=2), resume=True, progress=False)


def test_an_epoch_of_skipped_steps_reports_no_loss(data, bad_steps, tmp_path):
    bad_steps.set(lambda i: True)
    history = train_sessions(data, tmp_path / "run", _cfg(max_bad_steps=10_000), progress=False)
    epoch = history["epochs"][0]
    assert epoch["bad_steps"] == epoch["batches"] == history["bad_steps"]
    for key in ("loss", "loss_rec", "loss_time", "loss_first"):
        assert math.isnan(epoch[key]), key  # not 0.0: nothing was learned
    with pytest.raises(FloatingPointError, match="max_bad_steps=0"):
        train_sessions(data, tmp_path / "strict", _cfg(max_bad_steps=0), progress=False)


def _model(data, tmp_path, model: str = "thrnn"):
    from thrnn.checkpoint import load_run

    cfg = _cfg() if model == "thrnn" else config_for("paper-lastfm", model, item_embedding=8, epochs=1,
                                                     batch_size=4, device="cpu")
    train_sessions(data, tmp_path / model, cfg, progress=False)
    return load_run(tmp_path / model, device="cpu")


def test_scoring_refuses_non_finite_churn_figures(data, tmp_path):
    model, cfg = _model(data, tmp_path)
    recs, churn = score_users(model, data, cfg, run_date=dt.date(2024, 1, 1))
    assert np.isfinite(churn.drop(columns=["user_id", "last_session_end"]).to_numpy(float)).all()
    with torch.no_grad():
        for p in model.time_parameters():
            p.fill_(NAN)
    with pytest.raises(ValueError, match=r"non-finite .*churn_risk 8 of 8 users") as err:
        score_users(model, data, cfg, run_date=dt.date(2024, 1, 1))
    for column in ("p_return_1d", "p_return_7d", "p_return_30d", "p_no_return"):
        assert f"{column} 8 of 8 users" in str(err.value)


def test_non_temporal_models_keep_their_nan_time_columns(data, tmp_path):
    model, cfg = _model(data, tmp_path, "hrnn")
    recs, churn = score_users(model, data, cfg, run_date=dt.date(2024, 1, 1))
    assert len(recs) and churn["churn_risk"].isna().all() and churn["median_return_hours"].isna().all()
