"""Scoring: top-K next-session items and churn figures, checked against a reference and closed forms."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
import torch

from contract import columns as C
from tests.conftest import tiny_split
from tests.thrnn.conftest import reference_replay as _reference
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import load_sessions
from thrnn.scoring import churn_columns, horizon_column, run_date_end, score_users
from thrnn.train import train_sessions

torch.set_num_threads(1)


def _trained(tmp_path, model: str, **kw):
    split = tiny_split(n_users=6, n_items=10, seed=11, **kw)
    cfg = config_for("paper-lastfm", model, item_embedding=8, epochs=2, batch_size=3, device="cpu", history_sessions=3)
    train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    m, cfg = load_run(tmp_path)
    return m, cfg, split


def test_thrnn_scores_match_the_reference_and_closed_forms(tmp_path):
    model, cfg, split = _trained(tmp_path, "thrnn")
    data = load_sessions(split)
    last_event = pd.concat([split.train, split.test]).groupby(C.USER_ID)[C.EVENT_TIME].max()
    run_date = (last_event.min() + pd.Timedelta(days=2)).date()  # some users before, some after
    recs, churn = score_users(model, split, cfg, run_date=run_date, top_k=4)
    assert list(churn.columns) == churn_columns()
    assert list(recs.columns) == [C.USER_ID, "rank", C.ITEM_ID, "score"]
    final: dict = {}
    with torch.no_grad():
        _reference(model, cfg, data, final)
        for u, grp in recs.groupby(C.USER_ID):
            scores = model.first_out(final[u]["h"][None])[0]
            top = torch.topk(scores, 4)
            assert grp["rank"].tolist() == [1, 2, 3, 4]
            assert grp[C.ITEM_ID].tolist() == (top.indices + 1).tolist()
            # float32: the batched replay and the per-user reference round differently (~1e-7 absolute)
            np.testing.assert_allclose(grp["score"], top.values.numpy(), rtol=1e-5, atol=1e-6)
    # churn: last session end, elapsed to the UTC midnight after the run date, clipped at 0
    assert churn[C.USER_ID].tolist() == list(range(split.n_users))
    assert (churn["last_session_end"] == last_event.to_numpy()).all()
    end = pd.Timestamp(run_date_end(run_date))
    expected_elapsed = ((end - last_event).dt.total_seconds() / 3600).clip(lower=0)
    np.testing.assert_allclose(churn["elapsed_hours"], expected_elapsed.to_numpy())
    assert (churn["elapsed_hours"] == 0).any() and (churn["elapsed_hours"] > 0).any()
    # the model's law: S(t) = exp(-e^a (e^{w u} - 1) / w), u = t / unit, with a = v.h + b of the reference state
    w = float(model.time_head.w.detach())
    for _, row in churn.iterrows():
        a_exp = math.exp(float(model.time_head(final[int(row[C.USER_ID])]["h"][None]).detach()))

        def surv(t, a_exp=a_exp):
            return math.exp(-a_exp * math.expm1(w * t / cfg.time_unit_hours) / w)

        e = row["elapsed_hours"]
        for hz, col in ((24, "p_return_1d"), (168, "p_return_7d"), (720, "p_return_30d")):
            assert row[col] == pytest.approx(1 - surv(e + hz) / surv(e), rel=1e-5, abs=1e-9)
        assert row["churn_risk"] == pytest.approx(1 - row["p_return_30d"])
        never = math.exp(a_exp / w) if w < 0 else 0.0
        assert row["p_no_return"] == pytest.approx(never / surv(e), rel=1e-5, abs=1e-12)
        # the median given no return so far halves the survival from the elapsed time on
        m = row["median_return_hours"]
        if m < cfg.time_cutoff_hours:
            assert m >= e and surv(m) == pytest.approx(surv(e) / 2, rel=1e-6)
        else:
            assert surv(cfg.time_cutoff_hours) >= surv(e) / 2 * (1 - 1e-9)
    assert (churn["p_return_1d"] <= churn["p_return_7d"]).all()
    assert (churn["p_return_7d"] <= churn["p_return_30d"]).all()
    assert ((churn["churn_risk"] >= 0) & (churn["churn_risk"] <= 1)).all()
    assert (churn["expected_return_hours"] > 0).all()


def test_exclusions_and_k_larger_than_the_catalogue(tmp_path):
    model, cfg, split = _trained(tmp_path, "thrnn")
    recs, _ = score_users(model, split, cfg, run_date=dt.date(2030, 1, 1), top_k=50, exclude_items=[2, 5])
    assert recs.groupby(C.USER_ID).size().eq(split.n_items - 2).all()
    assert not recs[C.ITEM_ID].isin([0, 2, 5]).any()
    assert (recs.groupby(C.USER_ID)["score"].diff().dropna() <= 0).all()
    with pytest.raises(ValueError, match="item ids"):
        score_users(model, split, cfg, run_date=dt.date(2030, 1, 1), exclude_items=[99])
    _, churn = score_users(model, split, cfg, run_date=dt.date(2030, 1, 1), horizons_hours=(36,))
    assert "p_return_36h" in churn.columns and "churn_risk" in churn.columns


def test_hrnn_recommends_from_the_last_item_and_has_no_time_figures(tmp_path):
    model, cfg, split = _trained(tmp_path, "hrnn")
    recs, churn = score_users(model, split, cfg, run_date=dt.date(2030, 1, 1), top_k=3)
    final: dict = {}
    with torch.no_grad():
        _reference(model, cfg, load_sessions(split), final)
        for u, grp in recs.groupby(C.USER_ID):
            top = torch.topk(model.out(final[u]["last_out"][None])[0], 3)
            assert grp[C.ITEM_ID].tolist() == (top.indices + 1).tolist()
    assert churn[["expected_return_hours", "median_return_hours", "p_no_return", "p_return_1d",
                  "churn_risk"]].isna().all().all()
    assert (churn["elapsed_hours"] > 0).all()


def test_score_cli_writes_both_tables(tmp_path):
    split_dir = tmp_path / "split"
    split = tiny_split(split_dir)
    cfg = config_for("paper-lastfm", "thrnn", item_embedding=8, epochs=1, device="cpu")
    train_sessions(load_sessions(split), tmp_path / "run", cfg, progress=False)
    from thrnn.__main__ import main  # the command line, in this process (no second torch import)

    assert main(["score", "--data", str(split_dir), "--run", str(tmp_path / "run"), "--run-date", "2009-01-01",
                 "--out", str(tmp_path / "out"), "--top-k", "3", "--device", "cpu"]) == 0
    recs = pd.read_parquet(tmp_path / "out" / "recommendations.parquet")
    churn = pd.read_parquet(tmp_path / "out" / "churn.parquet")
    assert len(recs) == 3 * split.n_users and len(churn) == split.n_users
    assert str(churn["last_session_end"].dtype).startswith("datetime64") and churn["last_session_end"].dt.tz is not None


def test_scoring_a_history_with_a_smaller_catalogue_than_the_model(tmp_path):
    from thrnn.io import Split

    model, cfg, split = _trained(tmp_path, "thrnn")
    top = split.n_items
    train, test = split.train.copy(), split.test.copy()
    for f in (train, test):
        f.loc[f[C.ITEM_ID] == top, C.ITEM_ID] = 1
    items = split.items[split.items[C.ITEM_ID] < top]
    small = Split(train, test, items, split.users, {})
    assert load_sessions(small).n_items == top - 1 < model.n_items
    recs, churn = score_users(model, small, cfg, run_date=dt.date(2030, 1, 1), top_k=top, exclude_items=[top])
    assert recs.groupby(C.USER_ID).size().eq(top - 1).all() and not recs[C.ITEM_ID].isin([0, top]).any()
    masked, _ = score_users(model, small, cfg.replace(mask_untrained_items=True), run_date=dt.date(2030, 1, 1),
                            top_k=top)
    assert not masked[C.ITEM_ID].isin([0, top]).any()


def test_lognormal_churn_figures_follow_the_fitted_no_return_law(tmp_path):
    from thrnn.churn import ChurnLaw, fit_no_return
    from thrnn.inference import time_covariates

    split = tiny_split(n_users=6, n_items=10, seed=11)
    cfg = config_for("lastfm", "thrnn", item_embedding=8, epochs=2, batch_size=3, device="cpu", history_sessions=3)
    assert cfg.time_head == "lognormal"
    train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    data = load_sessions(split)
    last_event = pd.concat([split.train, split.test]).groupby(C.USER_ID)[C.EVENT_TIME].max()
    run_date = (last_event.max() + pd.Timedelta(days=20)).date()
    _, churn = score_users(model, split, cfg, run_date=run_date)
    # the law of each user from the reference state after the last session and the covariates after it
    final: dict = {}
    with torch.no_grad():
        _reference(model, cfg, data, final)
        after = time_covariates(model, data, cfg)
        last = data.last_rows(torch.ones(data.n_sessions, dtype=torch.bool))
        h = torch.stack([final[u]["h"] for u in range(split.n_users)])
        law = model.time_law(h, after[last]).to(torch.float64)
    e = torch.as_tensor(churn["elapsed_hours"].to_numpy())
    p0 = fit_no_return(law.log_survival(e).numpy(), int(data.time_mask.sum()))
    assert 0 < p0 < 1  # every user has been away 20 days or more: some of that is explained by never
    cl = ChurnLaw(law, p0)
    for hz, col in ((24, "p_return_1d"), (168, "p_return_7d"), (720, "p_return_30d")):
        np.testing.assert_allclose(churn[col], cl.return_within(e, hz).numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(churn["p_no_return"], cl.never(e).numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(churn["churn_risk"], 1 - churn["p_return_30d"])
    assert (churn["median_return_hours"] >= churn["elapsed_hours"].clip(upper=cfg.time_cutoff_hours)).all()
    assert churn[churn_columns()[3:]].notna().all().all()


def test_recalibrated_churn_figures_are_the_maps_applied_to_the_law(tmp_path, monkeypatch):
    from thrnn import recalibration as R

    split = tiny_split(n_users=6, n_items=10, seed=11)
    cfg = config_for("lastfm", "thrnn", item_embedding=8, epochs=2, batch_size=3, device="cpu", history_sessions=3)
    assert cfg.time_head == "lognormal" and not cfg.time_state
    train_sessions(load_sessions(split), tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    last_event = pd.concat([split.train, split.test]).groupby(C.USER_ID)[C.EVENT_TIME].max()
    run_date = (last_event.max() + pd.Timedelta(days=2)).date()
    _, raw = score_users(model, split, cfg, run_date=run_date, recalibrate=False)
    # the tiny history has too few anchor examples for the default bar: the law's figures stay
    _, same = score_users(model, split, cfg, run_date=run_date)
    assert all(m["a"] == 0.0 and m["b"] == 1.0 for m in same.attrs["recalibration"].values())
    pd.testing.assert_frame_equal(same, raw)
    monkeypatch.setattr(R, "MIN_EXAMPLES", 1)
    _, cal = score_users(model, split, cfg, run_date=run_date)
    maps = [R.HorizonMap(float(k[:-1]), m["a"], m["b"], m["examples"], m["anchors"])
            for k, m in cal.attrs["recalibration"].items()]
    assert any(not m.identity for m in maps)
    want = R.Recalibration(maps).apply({h: raw[horizon_column(h)].to_numpy() for h in (24.0, 168.0, 720.0)})
    for h in (24.0, 168.0, 720.0):
        np.testing.assert_allclose(cal[horizon_column(h)], want[h], rtol=1e-12)
    np.testing.assert_allclose(cal["churn_risk"], 1.0 - want[720.0], rtol=1e-12)
    np.testing.assert_allclose(cal["p_no_return"], np.minimum(raw["p_no_return"], 1.0 - want[720.0]), rtol=1e-12)
    # the return times do not depend on the recalibration
    pd.testing.assert_series_equal(cal["median_return_hours"], raw["median_return_hours"])
