"""Data contracts of the pipeline: the sessionized split before training, the tables after publishing.

Both raise :class:`ContractError` with every broken rule listed (not just the first), so a failed
night says at once what is wrong.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from contract import columns as C

from .warehouse import CHURN_RISK, MODEL_RUNS, RECOMMENDATIONS, RECOMMENDATIONS_SOURCE, SOURCE, Warehouse

MAX_SHOWN = 5  # failure examples per rule in the message


class ContractError(ValueError):
    """Data broke a contract; ``problems`` lists one line per broken rule."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} broke {len(problems)} rule(s):\n  - " + "\n  - ".join(problems))


def _event_schema(n_items: int, n_users: int):  # noqa: ANN202 - pandera schema
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            C.USER_ID: pa.Column("int32", pa.Check.in_range(0, max(n_users - 1, 0))),
            C.SESSION_ID: pa.Column("int64", pa.Check.ge(0)),
            C.SESSION_INDEX: pa.Column("int32", pa.Check.ge(0)),
            C.POSITION: pa.Column("int16", pa.Check.in_range(0, C.MAX_SESSION_LENGTH - 1)),
            C.ITEM_ID: pa.Column("int32", pa.Check.in_range(1, max(n_items, 1))),
            C.EVENT_TIME: pa.Column(checks=pa.Check(lambda s: pd.api.types.is_datetime64_any_dtype(s)
                                                    and s.dt.tz is not None, error="UTC timestamp")),
            C.GAP_BEFORE_SECONDS: pa.Column("float64", pa.Check.ge(0), nullable=True),
            C.IS_CONTINUATION: pa.Column("bool"),
        },
        strict=True,
        unique=[C.USER_ID, C.SESSION_INDEX, C.POSITION],
        coerce=False,
    )


def _pandera_problems(name: str, schema: Any, frame: pd.DataFrame) -> list[str]:
    import pandera.pandas as pa

    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        out = []
        for (col, check), grp in fc.groupby(["column", "check"], dropna=False, sort=True):
            examples = ", ".join(map(str, grp["failure_case"].head(MAX_SHOWN)))
            out.append(f"{name}.{col}: {check} failed for {len(grp)} row(s), e.g. {examples}")
        return out
    return []


def validate_split(data_dir: str | Path) -> dict[str, Any]:
    """Check a sessionize output folder against docs/design.md §3; return its figures, raise
    ContractError."""
    from thrnn.io import read_split

    split = read_split(data_dir)
    n_items, n_users = split.n_items, split.n_users
    problems: list[str] = []
    for name, frame in ((C.TRAIN_DIR, split.train), (C.TEST_DIR, split.test)):
        if frame.empty:
            problems.append(f"{name}: no events")
            continue
        problems += _pandera_problems(name, _event_schema(n_items, n_users), frame)
    if problems:  # the remaining rules assume the types above
        raise ContractError(f"split {data_dir}", problems)

    items, users = split.items, split.users
    if items[C.ITEM_ID].duplicated().any() or users[C.USER_ID].duplicated().any():
        problems.append("items/ or users/: duplicate ids")
    if sorted(items[C.ITEM_ID]) != list(range(1, len(items) + 1)):
        problems.append(f"items/: ids must be exactly 1..{len(items)}")
    if sorted(users[C.USER_ID]) != list(range(len(users))):
        problems.append(f"users/: ids must be exactly 0..{len(users) - 1}")

    events = pd.concat([split.train.assign(_test=False), split.test.assign(_test=True)], ignore_index=True)
    if events.duplicated([C.USER_ID, C.SESSION_INDEX, C.POSITION]).any():
        problems.append("train/ and test/ share (user_id, session_index, position) rows")
    sess = events.groupby([C.USER_ID, C.SESSION_INDEX], sort=True).agg(
        n=(C.POSITION, "size"),
        pmin=(C.POSITION, "min"),
        pmax=(C.POSITION, "max"),
        sid=(C.SESSION_ID, "nunique"),
        test=("_test", "max"),
        test_min=("_test", "min"),
        cont=(C.IS_CONTINUATION, "first"),
        gap=(C.GAP_BEFORE_SECONDS, "first"),
        start=(C.EVENT_TIME, "min"),
    ).reset_index()

    def rule(mask: pd.Series, text: str) -> None:
        if mask.any():
            bad = sess.loc[mask, [C.USER_ID, C.SESSION_INDEX]].head(MAX_SHOWN)
            examples = ", ".join(f"(user {u}, session {s})" for u, s in bad.itertuples(index=False))
            problems.append(f"{text}: {int(mask.sum())} session(s), e.g. {examples}")

    rule((sess["n"] < 2) | (sess["n"] > C.MAX_SESSION_LENGTH), f"session length outside 2..{C.MAX_SESSION_LENGTH}")
    rule((sess["pmin"] != 0) | (sess["pmax"] != sess["n"] - 1), "positions are not 0..n-1")
    rule(sess["sid"] != 1, "one session_index maps to several session_ids")
    rule(sess["test"] != sess["test_min"], "a session is split between train/ and test/")
    rule(sess["cont"] & (sess["gap"].fillna(-1) != 0), "continuation with a non-zero gap")
    first = sess[C.SESSION_INDEX] == 0
    rule(first & sess["gap"].notna(), "first session of a user has a gap")
    rule(~first & sess["gap"].isna(), "later session without a gap")

    per_user = sess.groupby(C.USER_ID).agg(
        n=(C.SESSION_INDEX, "size"), imax=(C.SESSION_INDEX, "max"), n_test=("test", "sum"),
        last_train=(C.SESSION_INDEX, lambda s: s[~sess.loc[s.index, "test"]].max()),
        first_test=(C.SESSION_INDEX, lambda s: s[sess.loc[s.index, "test"]].min()),
    )
    bad_users = per_user.index[
        (per_user["n"] < 3) | (per_user["imax"] != per_user["n"] - 1) | (per_user["n_test"] < 1)
        | (per_user["last_train"] > per_user["first_test"])
    ]
    if len(bad_users):
        problems.append(
            f"{len(bad_users)} user(s) without >= 3 consecutive sessions, earliest in train/ and at least "
            f"one in test/, e.g. users {list(bad_users[:MAX_SHOWN])}"
        )
    order_ok = sess.groupby(C.USER_ID)["start"].apply(lambda s: s.is_monotonic_increasing)
    if not order_ok.all():
        problems.append(f"sessions not in time order for users {list(order_ok.index[~order_ok][:MAX_SHOWN])}")

    stats = split.stats
    figures = {
        "users": int(events[C.USER_ID].nunique()),
        "items": int(n_items),
        "sessions": int(len(sess)),
        "events": int(len(events)),
        "train_events": int(len(split.train)),
        "test_events": int(len(split.test)),
        "train_sessions": int((~sess["test"]).sum()),
        "test_sessions": int(sess["test"].sum()),
    }
    for key, value in figures.items():
        if key in stats and int(stats[key]) != value:
            problems.append(f"stats.json says {key}={stats[key]} but the split has {value}")
    if problems:
        raise ContractError(f"split {data_dir}", problems)
    return figures


def risk_bucket(churn_risk: pd.Series, thresholds: tuple[float, float]) -> pd.Series:
    """low < thresholds[0] <= medium < thresholds[1] <= high."""
    low, high = thresholds
    out = pd.Series("medium", index=churn_risk.index, dtype="object")
    out[churn_risk < low] = "low"
    out[churn_risk >= high] = "high"
    return out


def check_published(
    wh: Warehouse,
    dataset: str,
    run_date: dt.date,
    *,
    expected_users: int,
    top_k: int,
    risk_thresholds: tuple[float, float],
    horizons_hours: tuple[float, ...] = (24.0, 168.0, 720.0),
    expected_recommendation_users: int | None = None,
    expected_source: str | None = None,
) -> dict[str, int]:
    """Re-read one published night and check it; return row counts, raise ContractError.

    ``churn_risk`` (no return within 30 days) equals ``1 - p_return_30d`` only when the last horizon
    is 720 h; with other horizons that rule is skipped. Recommendations cover the churn users, or
    ``expected_recommendation_users`` when given (a baseline's lists cover every user of the split,
    also those an older champion does not know). One ``source`` per night, equal to
    ``model_runs.recommendations_source`` (and to ``expected_source`` when given): a model's rows
    carry ``<model_name>/<model_version>``, a baseline's a NULL version.
    """
    key = [dataset, run_date]
    problems: list[str] = []

    def one(sql: str, params: list[Any] | None = None) -> Any:
        return wh.query(sql, key if params is None else params).iloc[0, 0]

    where = "WHERE dataset = ? AND run_date = ?"
    n_rec = int(one(f"SELECT COUNT(*) FROM {RECOMMENDATIONS} {where}"))
    n_churn = int(one(f"SELECT COUNT(*) FROM {CHURN_RISK} {where}"))
    rec_users = int(one(f"SELECT COUNT(DISTINCT user_key) FROM {RECOMMENDATIONS} {where}"))
    churn_users = int(one(f"SELECT COUNT(DISTINCT user_key) FROM {CHURN_RISK} {where}"))
    if n_rec == 0 or n_churn == 0:
        problems.append(f"empty night: {n_rec} recommendation rows, {n_churn} churn rows")
    if churn_users != n_churn:
        problems.append(f"churn_risk has {n_churn - churn_users} duplicate user row(s)")
    if churn_users != expected_users:
        problems.append(f"churn_risk has {churn_users} users, expected {expected_users}")
    rec_expected = churn_users if expected_recommendation_users is None else expected_recommendation_users
    if rec_users != rec_expected:
        problems.append(f"recommendations cover {rec_users} users but churn_risk {churn_users}"
                        + ("" if expected_recommendation_users is None else f", expected {rec_expected}"))
    missing = int(one(
        f"SELECT COUNT(*) FROM (SELECT user_key FROM {CHURN_RISK} {where} "
        f"EXCEPT SELECT user_key FROM {RECOMMENDATIONS} {where}) AS t", key + key))
    if missing:
        problems.append(f"{missing} user(s) have a churn row but no recommendations")
    bad_ranks = int(one(
        f"SELECT COUNT(*) FROM (SELECT user_key, MIN(rank) AS lo, MAX(rank) AS hi, COUNT(*) AS n, "
        f"COUNT(DISTINCT item_key) AS items FROM {RECOMMENDATIONS} {where} GROUP BY user_key) AS t "
        f"WHERE lo <> 1 OR hi <> n OR items <> n OR n > ?", key + [top_k]))
    if bad_ranks:
        problems.append(f"{bad_ranks} user(s) whose ranks are not 1..n (n <= {top_k}) over distinct items")
    bad_scores = int(one(f"SELECT COUNT(*) FROM {RECOMMENDATIONS} {where} AND score IN (CAST('NaN' AS DOUBLE PRECISION), "
        f"CAST('Infinity' AS DOUBLE PRECISION), CAST('-Infinity' AS DOUBLE PRECISION))"))
    if bad_scores:
        problems.append(f"{bad_scores} recommendation(s) with a NaN or infinite score")
    eps = 1e-6
    same = "AND ABS(churn_risk - (1 - p_return_30d)) <= ?" if float(horizons_hours[-1]) == 720.0 else ""
    bad_p = int(one(
        f"SELECT COUNT(*) FROM {CHURN_RISK} {where} AND NOT ("
        f"p_return_1d BETWEEN 0 AND 1 AND p_return_7d BETWEEN 0 AND 1 AND p_return_30d BETWEEN 0 AND 1 "
        f"AND churn_risk BETWEEN 0 AND 1 AND (p_no_return IS NULL OR p_no_return BETWEEN 0 AND 1) "
        f"AND p_return_1d <= p_return_7d + ? AND p_return_7d <= p_return_30d + ? {same})",
        key + [eps, eps] + ([eps] if same else [])))
    if bad_p:
        problems.append(f"{bad_p} churn row(s) with probabilities outside [0, 1], not increasing with the "
                        f"horizon, or churn_risk != 1 - p_return_30d")
    low, high = risk_thresholds
    bad_bucket = int(one(
        f"SELECT COUNT(*) FROM {CHURN_RISK} {where} AND risk_bucket <> CASE WHEN churn_risk < ? THEN 'low' "
        f"WHEN churn_risk >= ? THEN 'high' ELSE 'medium' END", key + [low, high]))
    if bad_bucket:
        problems.append(f"{bad_bucket} churn row(s) in the wrong risk bucket for thresholds {risk_thresholds}")
    # a baseline night's recommendations have no version: only the versions present must agree
    versions = int(one(
        f"SELECT COUNT(*) FROM (SELECT model_version FROM {RECOMMENDATIONS} {where} AND model_version IS NOT NULL "
        f"UNION SELECT model_version FROM {CHURN_RISK} {where}) AS t", key + key))
    if versions > 1:
        problems.append(f"the night mixes {versions} model versions")
    sources = wh.query(f"SELECT DISTINCT {SOURCE} FROM {RECOMMENDATIONS} {where} ORDER BY 1", key).iloc[:, 0].tolist()
    if len(sources) > 1:
        problems.append(f"recommendations mix {len(sources)} sources {sources}")
    bad_source = int(one(
        f"SELECT COUNT(*) FROM {RECOMMENDATIONS} {where} AND NOT ("
        f"(model_version IS NULL AND POSITION('/' IN {SOURCE}) = 0) "
        f"OR COALESCE({SOURCE} = model_name || '/' || CAST(model_version AS VARCHAR), FALSE))"))
    if bad_source:
        problems.append(f"{bad_source} recommendation row(s) whose source does not match their model version "
                        f"(<model_name>/<model_version>, or a baseline name with a NULL version)")
    if expected_source is not None and sources and sources != [expected_source]:
        problems.append(f"recommendations come from {sources}, expected {expected_source!r}")
    runs = wh.query(f"SELECT recommendation_rows, churn_rows, {RECOMMENDATIONS_SOURCE} FROM {MODEL_RUNS} {where}", key)
    if len(runs) != 1:
        problems.append(f"model_runs has {len(runs)} row(s) for the night, expected 1")
    else:
        if (int(runs.iloc[0, 0]), int(runs.iloc[0, 1])) != (n_rec, n_churn):
            problems.append(f"model_runs counts {tuple(runs.iloc[0, :2])} differ from the tables ({n_rec}, {n_churn})")
        if sources and runs.iloc[0, 2] not in sources:
            problems.append(f"model_runs.{RECOMMENDATIONS_SOURCE} {runs.iloc[0, 2]!r} is not the published "
                            f"source {sources}")
    if problems:
        raise ContractError(f"published night {dataset}/{run_date}", problems)
    return {"recommendation_rows": n_rec, "churn_rows": n_churn, "users": churn_users}
