"""The backtest: outcome labels and figures on hand-made frames, the baselines' pure functions with
hand-computed values, and the ``python -m thrnn backtest`` command end to end on a small generated log."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from contract import columns as C
from thrnn.backtest import (
    BacktestError,
    backtest_metrics,
    check_run_date,
    empirical_baseline,
    empirical_return_probability,
    first_returns,
    label_outcomes,
    outcome_frame,
    user_gaps,
    user_median_baseline,
)

D = dt.date(2024, 1, 10)
END = pd.Timestamp("2024-01-11T00:00:00Z")  # end of D's UTC day
H = pd.Timedelta(hours=1)


def _churn() -> pd.DataFrame:
    """Five users; probabilities chosen so that every figure can be worked out by hand."""
    return pd.DataFrame({
        C.USER_ID: [0, 1, 2, 3, 4],
        "last_session_end": [END - 6 * H, END - 30 * H, END - 100 * H, END - 48 * H, END - 500 * H],
        "elapsed_hours": [6.0, 30.0, 100.0, 48.0, 500.0],
        "expected_return_hours": [12.0, 110.0, 900.0, 720.0, 2500.0],
        "median_return_hours": [10.0, 100.0, 800.0, 700.0, 2000.0],
        "p_no_return": [0.0, 0.1, 0.3, 0.3, 0.8],
        "p_return_1d": [0.9, 0.2, 0.05, 0.1, 0.01],
        "p_return_7d": [0.95, 0.6, 0.2, 0.3, 0.05],
        "p_return_30d": [0.99, 0.8, 0.4, 0.35, 0.1],
        "churn_risk": [0.01, 0.2, 0.6, 0.65, 0.9],
    })


# returns: u0 2 h after the end of D, u1 3 days after, u3 25 days after; u2 and u4 never
RETURNS = [END + 2 * H, END + 72 * H, pd.NaT, END + 600 * H, pd.NaT]


def _outcomes(returns=RETURNS) -> pd.DataFrame:
    return pd.DataFrame({C.USER_ID: [0, 1, 2, 3, 4], "return_start": pd.to_datetime(returns, utc=True)})


def test_labels_actual_hours_and_observability():
    labels = label_outcomes(_churn(), _outcomes(), run_date=D, log_end=END + pd.Timedelta(days=40))
    np.testing.assert_allclose(labels["actual_return_hours"], [8.0, 102.0, np.nan, 648.0, np.nan])
    assert labels["returned_1d"].tolist() == [1, 0, 0, 0, 0]
    assert labels["returned_7d"].tolist() == [1, 1, 0, 0, 0]
    assert labels["returned_30d"].tolist() == [1, 1, 0, 1, 0]  # never-returning users are 0
    assert labels[["observable_1d", "observable_7d", "observable_30d"]].all().all()

    # the log ends exactly 7 days after the end of D: 7 d is observable (<=), 30 d is not
    short = _outcomes([END + 2 * H, END + 72 * H, pd.NaT, pd.NaT, pd.NaT])
    labels = label_outcomes(_churn(), short, run_date=D, log_end=END + pd.Timedelta(days=7))
    assert labels["observable_7d"].all() and not labels["observable_30d"].any()
    assert labels["returned_30d"].isna().all()
    labels = label_outcomes(_churn(), short, run_date=D, log_end=END + pd.Timedelta(days=7) - pd.Timedelta(seconds=1))
    assert labels["observable_1d"].all() and not labels["observable_7d"].any()

    # a return exactly h after the end of D is within h
    edge = _outcomes([END + 24 * H, pd.NaT, pd.NaT, pd.NaT, pd.NaT])
    labels = label_outcomes(_churn(), edge, run_date=D, log_end=END + pd.Timedelta(days=2))
    assert labels["returned_1d"].tolist() == [1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="before the end of the run date"):
        label_outcomes(_churn(), _outcomes([END - H, *RETURNS[1:]]), run_date=D, log_end=END + pd.Timedelta(days=40))


def test_metrics_by_hand_all_horizons_observable():
    m = backtest_metrics(_churn(), _outcomes(), run_date=D, log_end=END + pd.Timedelta(days=40),
                         risk_thresholds=(0.3, 0.7))
    assert (m["users_scored"], m["users_returned"], m["users_never_returned"]) == (5, 3, 2)
    assert m["observable"] == {"1d": {"hours": 24.0, "observable": True, "users": 5},
                               "7d": {"hours": 168.0, "observable": True, "users": 5},
                               "30d": {"hours": 720.0, "observable": True, "users": 5}}
    h = m["model"]["horizons"]
    assert h["1d"]["n"] == 5
    assert h["1d"]["base_rate"] == pytest.approx(0.2)
    assert h["1d"]["mean_p"] == pytest.approx(0.252)
    assert h["1d"]["brier"] == pytest.approx((0.01 + 0.04 + 0.0025 + 0.01 + 0.0001) / 5)
    assert h["7d"]["base_rate"] == pytest.approx(0.4)
    assert h["7d"]["mean_p"] == pytest.approx(0.42)
    assert h["7d"]["brier"] == pytest.approx((0.0025 + 0.16 + 0.04 + 0.09 + 0.0025) / 5)
    assert h["30d"]["base_rate"] == pytest.approx(0.6)
    assert h["30d"]["mean_p"] == pytest.approx(0.528)
    assert h["30d"]["brier"] == pytest.approx((0.0001 + 0.04 + 0.16 + 0.4225 + 0.01) / 5)
    for lab in ("1d", "7d", "30d"):
        assert 0 <= h[lab]["ece"] <= 1
        assert sum(b["count"] for b in h[lab]["reliability"]) == 5
    # no return within 30 d: u2 (risk .6) and u4 (.9) against u0 (.01), u1 (.2), u3 (.65): 5 of 6 pairs
    assert m["model"]["auc_no_return_30d"] == pytest.approx(5 / 6)
    assert m["model"]["auc_n"] == 5
    assert h["30d"]["auc_no_return"] == pytest.approx(5 / 6)  # 1 - p_return_30d is the churn risk
    assert h["1d"]["auc_no_return"] == pytest.approx(1.0)  # only u0 is back within 1 d, with the top p
    # buckets at (0.3, 0.7): low u0 u1 (both returned), medium u2 u3 (one did not), high u4 (did not)
    b = m["model"]["risk_buckets"]
    assert {k: (v["users"], v["no_return_30d_rate"]) for k, v in b.items()} == {
        "low": (2, 0.0), "medium": (2, 0.5), "high": (1, 1.0)}
    assert b["medium"]["mean_churn_risk"] == pytest.approx(0.625)
    # MAE over the three returns: |8 - 10|, |102 - 100|, and u3's 648 h vs 700 h both capped at 500 h
    assert m["model"]["mae_hours"] == pytest.approx(4 / 3)
    assert m["model"]["mae_n"] == 3


def test_metrics_with_30_days_unobservable():
    short = _outcomes([END + 2 * H, END + 72 * H, pd.NaT, pd.NaT, pd.NaT])
    churn = _churn().assign(risk_bucket=["low", "low", "medium", "medium", "high"])
    m = backtest_metrics(churn, short, run_date=D, log_end=END + pd.Timedelta(days=10))
    assert m["observable"]["30d"] == {"hours": 720.0, "observable": False, "users": 0}
    h30 = m["model"]["horizons"]["30d"]
    assert (h30["n"], h30["base_rate"], h30["brier"], h30["ece"], h30["auc_no_return"], h30["reliability"]) == (
        0, None, None, None, None, [])
    assert m["model"]["horizons"]["7d"]["base_rate"] == pytest.approx(0.4)
    assert m["model"]["auc_no_return_30d"] is None and m["model"]["auc_n"] == 0
    assert all(v["no_return_30d_rate"] is None for v in m["model"]["risk_buckets"].values())
    assert [v["users"] for v in m["model"]["risk_buckets"].values()] == [2, 2, 1]
    assert m["model"]["mae_hours"] == pytest.approx(2.0) and m["model"]["mae_n"] == 2


def test_baseline_figures_on_the_same_users():
    churn = _churn()
    gaps = pd.DataFrame({C.USER_ID: [0, 0, 1, 1, 3], "gap_hours": [8.0, 12.0, 90.0, 110.0, 500.0]})
    users, elapsed = churn[C.USER_ID].to_numpy(), churn["elapsed_hours"].to_numpy()
    baselines = {"user_median": user_median_baseline(gaps, users, elapsed),
                 "empirical": empirical_baseline(gaps, users, elapsed)}
    m = backtest_metrics(churn, _outcomes(), run_date=D, log_end=END + pd.Timedelta(days=40), baselines=baselines)
    med = m["baselines"]["user_median"]
    # medians 10, 100, 90 (global), 500, 90: errors 2, 2 and |500 - 500| after the cap
    assert med["mae_hours"] == pytest.approx(4 / 3) and med["mae_n"] == 3
    assert all(v["brier"] is None and v["ece"] is None for v in med["horizons"].values())
    assert med["horizons"]["30d"]["base_rate"] == pytest.approx(0.6)
    # scores elapsed / median: .6, .3, 100/90, 48/500, 500/90: u2 and u4 above every returner
    assert med["auc_no_return_30d"] == pytest.approx(1.0)
    # within 1 d only u0 (.6) returned; u1 (.3) and u3 (.096) score lower: 2 of 4 pairs right
    assert med["horizons"]["1d"]["auc_no_return"] == pytest.approx(0.5)
    emp = m["baselines"]["empirical"]
    assert emp["mae_hours"] is None and emp["mae_n"] == 0
    for lab in ("1d", "7d", "30d"):
        assert emp["horizons"][lab]["n"] == 5 and 0 <= emp["horizons"][lab]["brier"] <= 1


def _events(rows):
    cols = [C.USER_ID, C.POSITION, C.IS_CONTINUATION, C.EVENT_TIME, C.GAP_BEFORE_SECONDS]
    return pd.DataFrame(rows, columns=cols).assign(**{C.EVENT_TIME: lambda f: pd.to_datetime(f[C.EVENT_TIME], utc=True)})


def test_user_gaps_and_first_returns_skip_continuations():
    t = pd.Timestamp("2024-01-10T12:00:00Z")
    train = _events([
        (0, 0, False, t, None), (0, 1, False, t + H, None),
        (0, 0, False, t + 5 * H, 4 * 3600.0), (0, 1, False, t + 6 * H, None),
        (1, 0, False, t, None), (1, 1, False, t + H, None),
    ])
    test = _events([
        (0, 0, True, t + 13 * H, 0.0), (0, 1, True, t + 14 * H, None),  # continuation spanning midnight
        (0, 0, False, t + 20 * H, 6 * 3600.0), (0, 1, False, t + 21 * H, None),
        (1, 0, False, t + 3 * H, 2 * 3600.0), (1, 1, False, t + 4 * H, None),
    ])
    split = SimpleNamespace(train=train, test=test,
                            users=pd.DataFrame({C.USER_ID: [0, 1], C.USER_KEY: ["alice", "bob"]}))
    gaps = user_gaps(split)
    assert sorted(zip(gaps[C.USER_ID], gaps["gap_hours"], strict=True)) == [(0, 4.0), (0, 6.0), (1, 2.0)]
    # the end of D is 12 h after t: the continuation chunk at +13 h is no return, the session at +20 h is
    first = first_returns(split, D)
    assert first.to_dict("records") == [{C.USER_KEY: "alice", "return_start": t + 20 * H}]
    # as-of-D ids differ from the full split's: joined on the key; "carol" is not in the full split
    as_of = pd.DataFrame({C.USER_ID: [0, 1, 2], C.USER_KEY: ["bob", "alice", "carol"]})
    out = outcome_frame(as_of, split, D)
    assert out[C.USER_ID].tolist() == [0, 1, 2]
    assert out["return_start"].isna().tolist() == [True, False, True]
    assert out["in_full"].tolist() == [True, True, False]


def test_user_median_baseline_by_hand():
    gaps = pd.DataFrame({C.USER_ID: [0, 0, 0, 1, 1], "gap_hours": [2.0, 10.0, 30.0, 4.0, 6.0]})
    b = user_median_baseline(gaps, np.array([0, 1, 2]), np.array([5.0, 20.0, 3.0]))
    assert b[C.USER_ID].tolist() == [0, 1, 2]
    np.testing.assert_allclose(b["median_return_hours"], [10.0, 5.0, 6.0])  # user 2: the global median
    np.testing.assert_allclose(b["churn_score"], [0.5, 4.0, 0.5])


def test_empirical_return_probability_by_hand():
    user = np.array([30.0, 2.0, 10.0])
    glob = np.array([1.0, 2.0, 3.0, 10.0, 30.0, 100.0])
    # user gaps > 5: 10, 30; in (5, 29]: 10. Global share > 5: 3/6; in (5, 29]: 1/6.
    assert empirical_return_probability(user, glob, 5, 24) == pytest.approx((1 + 5 / 6) / (2 + 5 * 0.5))
    assert empirical_return_probability(user, glob, 5, 24, k=0) == pytest.approx(0.5)
    assert empirical_return_probability(np.array([]), glob, 5, 24) == pytest.approx((1 / 6) / (1 / 2))
    assert empirical_return_probability(user, glob, 0, 1000) == pytest.approx(1.0)
    assert empirical_return_probability(user, glob, 200, 24) == 0.0  # nothing is > e
    # k = 0 and no user gap > e: the global conditional share
    assert empirical_return_probability(np.array([2.0]), glob, 50, 60, k=0) == pytest.approx(1.0)
    assert empirical_return_probability(np.array([2.0]), glob, 50, 10, k=0) == 0.0
    assert empirical_return_probability(np.array([]), np.array([]), 5, 24) == 0.0


def test_empirical_baseline_frame():
    gaps = pd.DataFrame({C.USER_ID: [0, 0, 0, 1], "gap_hours": [2.0, 10.0, 30.0, 100.0]})
    users, elapsed = np.array([0, 1, 2]), np.array([5.0, 0.0, 40.0])
    b = empirical_baseline(gaps, users, elapsed)
    assert list(b.columns) == [C.USER_ID, "p_return_1d", "p_return_7d", "p_return_30d", "churn_score"]
    glob = gaps["gap_hours"].to_numpy()
    for i, u in enumerate(users):
        own = gaps.loc[gaps[C.USER_ID] == u, "gap_hours"].to_numpy()
        for h, col in ((24, "p_return_1d"), (168, "p_return_7d"), (720, "p_return_30d")):
            assert b.loc[i, col] == pytest.approx(empirical_return_probability(own, glob, elapsed[i], h))
    np.testing.assert_allclose(b["churn_score"], 1 - b["p_return_30d"])
    assert ((b["p_return_1d"] <= b["p_return_7d"]) & (b["p_return_7d"] <= b["p_return_30d"])).all()


def test_run_date_checks():
    start, end = pd.Timestamp("2024-01-01T05:00:00Z"), pd.Timestamp("2024-01-20T05:00:00Z")
    check_run_date(dt.date(2024, 1, 10), start, end)
    with pytest.raises(BacktestError, match="before the log"):
        check_run_date(dt.date(2023, 12, 31), start, end)
    with pytest.raises(BacktestError, match="at or after the end of the log"):
        check_run_date(dt.date(2024, 1, 20), start, end)
    with pytest.raises(BacktestError, match="no scored user has an observable horizon"):
        check_run_date(dt.date(2024, 1, 19), start, end)  # 5 h of log after the end of D


# --------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def raw_log(tmp_path_factory):
    from synth import generate

    path = tmp_path_factory.mktemp("backtest-raw") / "lastfm.tsv"
    summary = generate("lastfm", 4000, path, seed=1, users=12, start="2025-11-01", days=60)
    return path, summary


@pytest.mark.spark
@pytest.mark.slow  # two Spark sessionize runs: about 20 s with a warm JVM, more from cold
def test_cli_end_to_end(spark, raw_log, tmp_path, capsys):
    from thrnn.__main__ import main

    path, summary = raw_log
    last = pd.Timestamp(summary["last_event"])
    run_date = (last - pd.Timedelta(days=10)).date()  # 1 d and 7 d observable, 30 d not
    out = tmp_path / "out"
    rc = main(["backtest", "--input", str(path), "--format", "lastfm", "--run-date", run_date.isoformat(),
               "--out", str(out), "--epochs", "1", "--seed", "0", "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert "backtest at" in capsys.readouterr().out
    res = json.loads((out / "backtest.json").read_text())
    assert (out / "reliability.png").stat().st_size > 0
    md = (out / "backtest.md").read_text()
    assert "not observable" in md and "| THRNN |" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left

    n = res["users_scored"]
    assert n == res["splits"]["as_of"]["users"] > 0
    assert res["users_returned"] + res["users_never_returned"] == n
    assert res["run_date"] == run_date.isoformat()
    assert res["trained"] and res["config"]["epochs"] == 1 and (out / "run" / "model.pt").exists()
    end, log_end = pd.Timestamp(res["run_date_end"]), pd.Timestamp(res["log_end"])
    assert log_end <= pd.Timestamp(summary["last_event"])  # the latest kept event
    for lab, hours in (("1d", 24), ("7d", 168), ("30d", 720)):
        observable = end + pd.Timedelta(hours=hours) <= log_end
        assert res["observable"][lab] == {"hours": float(hours), "observable": observable, "users": n * observable}
        for figs in (res["model"], *res["baselines"].values()):
            h = figs["horizons"][lab]
            assert h["observable"] == observable and h["n"] == n * observable
    assert res["observable"]["1d"]["observable"] and not res["observable"]["30d"]["observable"]
    model = res["model"]
    assert sum(b["users"] for b in model["risk_buckets"].values()) == n
    assert all(b["no_return_30d_rate"] is None for b in model["risk_buckets"].values())
    assert model["auc_no_return_30d"] is None
    assert model["mae_n"] == res["users_returned"] == res["baselines"]["user_median"]["mae_n"]
    for figs in (model, res["baselines"]["empirical"]):
        for lab in ("1d", "7d"):
            h = figs["horizons"][lab]
            for key in ("base_rate", "mean_p", "brier", "ece"):
                assert 0.0 <= h[key] <= 1.0, (lab, key)
            assert sum(b["count"] for b in h["reliability"]) == n
            for b in h["reliability"]:
                for key in ("mean_p", "observed"):
                    assert b[key] is None or 0.0 <= b[key] <= 1.0
    # returning within 1 d implies returning within 7 d
    assert model["horizons"]["1d"]["base_rate"] <= model["horizons"]["7d"]["base_rate"]



def test_cli_errors_are_one_line_with_exit_status_2(monkeypatch, tmp_path, capsys):
    """A run date outside the log fails in check_run_date (tested above); here: how main reports it."""
    from thrnn import backtest
    from thrnn.__main__ import main

    def refuse(*args, **kwargs):
        raise BacktestError("run date 2030-01-01 is at or after the end of the log (2026-01-01T00:00:00Z): "
                            "nothing happened after it")

    monkeypatch.setattr(backtest, "run_backtest", refuse)
    argv = ["backtest", "--input", "raw.tsv", "--format", "lastfm", "--run-date", "2030-01-01", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["backtest: error: run date 2030-01-01 is at or after the end of the log (2026-01-01T00:00:00Z): "
                   "nothing happened after it"]
    with pytest.raises(SystemExit) as exc:  # argparse: bad thresholds
        main([*argv, "--risk-thresholds", "0.8,0.2"])
    assert exc.value.code == 2


def test_published_rows_against_a_later_split_match_the_frame_backtest():
    # the five users of _churn() as published rows keyed by name; the later split shows u0 back 2 h and
    # u1 72 h after the end of D (u1 also had a continuation chunk before), u3 600 h after; u2 and u4 never
    from thrnn.backtest import backtest_published

    keys = ["u0", "u1", "u2", "u3", "u4"]
    rows = _churn().drop(columns=[C.USER_ID]).assign(**{C.USER_KEY: keys})
    rows["risk_bucket"] = ["low", "low", "medium", "medium", "high"]
    later = _events([
        (0, 0, False, END + 2 * H, 3600.0), (0, 1, False, END + 3 * H, None),
        (1, 0, True, END + H, 0.0), (1, 1, True, END + 2 * H, None),
        (1, 0, False, END + 72 * H, 3600.0), (1, 1, False, END + 73 * H, None),
        (3, 0, False, END + 600 * H, 3600.0), (3, 1, False, END + 601 * H, None),
        (4, 0, False, END - 600 * H, None), (4, 1, False, END - 599 * H, None),
    ])
    split = SimpleNamespace(train=later, test=later.iloc[0:0],
                            users=pd.DataFrame({C.USER_ID: [0, 1, 3, 4], C.USER_KEY: ["u0", "u1", "u3", "u4"]}))
    until = END + pd.Timedelta(days=40)
    got = backtest_published(rows, split, D, until, risk_thresholds=(0.3, 0.7))
    want = backtest_metrics(_churn(), _outcomes(), run_date=D, log_end=until, risk_thresholds=(0.3, 0.7))
    assert got["model"]["horizons"]["7d"]["brier"] == pytest.approx(want["model"]["horizons"]["7d"]["brier"])
    assert got["model"]["auc_no_return_30d"] == pytest.approx(5 / 6)
    assert got["model"]["mae_hours"] == pytest.approx(4 / 3)
    assert (got["users_scored"], got["users_returned"], got["users_missing_in_full"]) == (5, 3, 1)
    assert got["days_after_run_date"] == pytest.approx(40.0)
    with pytest.raises(BacktestError, match="lack churn_risk"):
        backtest_published(rows.drop(columns=["churn_risk"]), split, D, until)
    with pytest.raises(BacktestError, match="no churn rows"):
        backtest_published(rows.iloc[0:0], split, D, until)
