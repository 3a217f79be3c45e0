"""Publishing to DuckDB and PostgreSQL: replace one night atomically, keep history, bind values."""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pandas as pd
import pytest

from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError, check_published

from .conftest import night_frames

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def wh(request, tmp_path) -> W.Warehouse:
    if request.param == "duckdb":
        return W.connect(f"duckdb://{tmp_path / 'w.duckdb'}")
    return W.connect(request.getfixturevalue("pg_url"))


def _night(wh: W.Warehouse, table: str, day: dt.date, dataset: str = "demo") -> pd.DataFrame:
    out = wh.read_night(table, dataset, day)
    for c in W.TIMESTAMP_COLUMNS & set(out.columns):
        out[c] = pd.to_datetime(out[c], utc=True)
    out["run_date"] = pd.to_datetime(out["run_date"]).dt.date
    return _plain(out)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with None for every missing value, so NaN-vs-None is no difference."""
    return frame.astype(object).where(frame.notna(), None)


def _expected(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    return _plain(frame.sort_values(W.TABLE_ORDER[table]).reset_index(drop=True))


def test_ddl_matches_the_python_column_lists():
    con = duckdb.connect()
    for stmt in W.schema_statements():
        con.execute(stmt)
    for table, cols in W.TABLE_COLUMNS.items():
        assert [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()] == cols
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert views == {"latest_recommendations", "latest_churn_risk", "at_risk_users"}


def test_publish_replaces_one_night_keeps_history_and_is_idempotent(wh):
    first = night_frames(D1, version=1)
    assert wh.publish("demo", D1, first) == {t: len(f) for t, f in first.items()}
    second = night_frames(D2, version=2, users=("u1", "u3", "u4"))
    wh.publish("demo", D2, second)
    # re-publish night 2 with different content: night 1 is untouched, night 2 fully replaced
    again = night_frames(D2, version=3, users=("u5",))
    wh.publish("demo", D2, again)
    wh.publish("demo", D2, again)
    for table in W.TABLE_COLUMNS:
        got1, got2 = _night(wh, table, D1), _night(wh, table, D2)
        pd.testing.assert_frame_equal(got1, _expected(first[table], table), check_dtype=False)
        pd.testing.assert_frame_equal(got2, _expected(again[table], table), check_dtype=False)
    latest = wh.query("SELECT user_key, rank, model_version FROM latest_recommendations ORDER BY user_key, rank")
    assert latest.values.tolist() == [["u5", 1, 3], ["u5", 2, 3], ["u5", 3, 3]]
    # u5 is in bucket "medium" (churn 0.5); nobody is at risk
    assert wh.query("SELECT COUNT(*) FROM at_risk_users").iloc[0, 0] == 0
    assert check_published(wh, "demo", D2, expected_users=1, top_k=3, risk_thresholds=(0.3, 0.7)) == {
        "recommendation_rows": 3, "churn_rows": 1, "users": 1,
    }


def test_datasets_are_independent(wh):
    wh.publish("demo", D1, night_frames(D1, dataset="demo"))
    wh.publish("other", D1, night_frames(D1, dataset="other", users=("x",)))
    wh.publish("demo", D1, night_frames(D1, dataset="demo", users=("u9",)))
    assert _night(wh, W.RECOMMENDATIONS, D1, "other")["user_key"].unique().tolist() == ["x"]
    assert _night(wh, W.RECOMMENDATIONS, D1, "demo")["user_key"].unique().tolist() == ["u9"]


def test_failed_publish_leaves_the_previous_night(wh):
    good = night_frames(D1)
    wh.publish("demo", D1, good)
    bad = night_frames(D1, version=2)
    # second row duplicates the primary key of the first: the INSERT fails after the DELETE ran
    bad[W.RECOMMENDATIONS].loc[1, "rank"] = 1
    with pytest.raises(Exception, match=re.compile("constraint|duplicate|unique", re.I)):
        wh.publish("demo", D1, bad)
    for table in W.TABLE_COLUMNS:
        pd.testing.assert_frame_equal(_night(wh, table, D1), _expected(good[table], table), check_dtype=False)


def test_values_are_bound_not_spliced(wh):
    evil = "x'); DROP TABLE recommendations; --"
    frames = night_frames(D1, users=(evil, "u2"))
    wh.publish("demo", D1, frames)
    got = _night(wh, W.RECOMMENDATIONS, D1)
    assert evil in set(got["user_key"])
    assert len(got) == 6


def test_frames_that_do_not_fit_are_refused(tmp_path):
    wh = W.connect(f"duckdb://{tmp_path / 'w.duckdb'}")
    frames = night_frames(D1)
    with pytest.raises(W.PublishError, match=r"run_date=2026-01-02"):
        wh.publish("demo", D2, frames)
    with pytest.raises(W.PublishError, match=r"missing \['score'\]"):
        wh.publish("demo", D1, {W.RECOMMENDATIONS: frames[W.RECOMMENDATIONS].drop(columns="score")})
    with pytest.raises(W.PublishError, match="unknown table"):
        wh.publish("demo", D1, {"users": frames[W.RECOMMENDATIONS]})
    with pytest.raises(ValueError, match="unsupported warehouse URL"):
        W.connect("mysql://x")
    assert not (tmp_path / "w.duckdb").exists()


def test_duckdb_reader_open_during_publish_sees_the_old_night_and_never_a_lock(tmp_path):
    path = tmp_path / "w.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1, version=1))
    reader = duckdb.connect(str(path), read_only=True)
    try:
        # a reader holding the file does not block the publisher (it writes a staging copy)
        wh.publish("demo", D1, night_frames(D1, version=2))
        assert reader.execute("SELECT DISTINCT model_version FROM recommendations").fetchall() == [(1,)]
    finally:
        reader.close()
    assert wh.query("SELECT DISTINCT model_version FROM recommendations").iloc[:, 0].tolist() == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb", "w.duckdb.lock"]


def test_check_published_lists_every_broken_rule(wh):
    frames = night_frames(D1)
    churn = frames[W.CHURN_RISK]
    churn.loc[0, "p_return_1d"] = 1.5  # out of range and above the 7-day probability
    churn.loc[1, "risk_bucket"] = "high"  # churn 0.05 is "low"
    frames[W.RECOMMENDATIONS] = frames[W.RECOMMENDATIONS][lambda f: f["rank"] != 2]  # ranks 1, 3
    # model_runs still says 6 recommendation rows: the check compares it with the table
    wh.publish("demo", D1, frames)
    with pytest.raises(ContractError) as err:
        check_published(wh, "demo", D1, expected_users=3, top_k=3, risk_thresholds=(0.3, 0.7))
    text = str(err.value)
    assert len(err.value.problems) == 5, text
    for part in ("churn_risk has 2 users, expected 3", "ranks are not 1..n", "probabilities outside",
                 "wrong risk bucket", "model_runs counts"):
        assert part in text
