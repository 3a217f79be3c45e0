"""Split contracts (validate_split) and the pyfunc's mapping of a keyed history into model ids."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from contract import columns as C
from thrnn.io import read_split, split_from_sessions, write_split
from thrnn.pipeline.checks import ContractError, risk_bucket, validate_split
from thrnn.pipeline.pyfunc import HISTORY_COLUMNS, IN_TEST, history_from_split, split_in_model_space

H = 3600.0


def _sessions() -> dict[int, list[list[tuple[int, float]]]]:
    # 3 users x 3 sessions of 2-3 events; one item (5) appears only for user 2
    out = {}
    for u in range(3):
        t0 = 1_700_000_000 + u * 100_000
        out[u] = [
            [(1, t0), (2, t0 + 60)],
            [(2, t0 + 5 * H), (3, t0 + 5 * H + 60), (4 + (u == 2), t0 + 5 * H + 120)],
            [(1, t0 + 30 * H), (3, t0 + 30 * H + 60)],
        ]
    return out


@pytest.fixture
def split_dir(tmp_path):
    split = split_from_sessions(_sessions(), tmp_path / "split")
    stats = {"users": 3, "events": 21, "train_events": 15, "test_events": 6}
    write_split(tmp_path / "split", split.train, split.test, split.items, split.users, stats)
    return tmp_path / "split"


def test_valid_split_passes_with_its_figures(split_dir):
    assert validate_split(split_dir) == {
        "users": 3, "items": 5, "sessions": 9, "events": 21, "train_events": 15, "test_events": 6,
        "train_sessions": 6, "test_sessions": 3,
    }


def _rewrite(split_dir, **frames):
    s = read_split(split_dir)
    parts = {"train": s.train, "test": s.test, "items": s.items, "users": s.users, **frames}
    write_split(split_dir, parts["train"], parts["test"], parts["items"], parts["users"], s.stats)


def test_broken_splits_list_every_rule(split_dir):
    s = read_split(split_dir)
    train = s.train.copy()
    train.loc[train.index[1], C.POSITION] = 5  # user 0 session 0 positions 0, 5
    train.loc[train[C.SESSION_INDEX] == 1, C.GAP_BEFORE_SECONDS] = None  # later session without a gap
    _rewrite(split_dir, train=train)
    with pytest.raises(ContractError) as err:
        validate_split(split_dir)
    text = str(err.value)
    assert "positions are not 0..n-1: 1 session(s), e.g. (user 0, session 0)" in text
    assert "later session without a gap: 3 session(s)" in text


def test_item_ids_out_of_range_and_stats_mismatch(split_dir):
    s = read_split(split_dir)
    test = s.test.copy()
    test.loc[test.index[0], C.ITEM_ID] = 99
    _rewrite(split_dir, test=test)
    with pytest.raises(ContractError, match=r"test\.item_id: in_range\(1, 5\) failed for 1 row\(s\), e\.g\. 99"):
        validate_split(split_dir)
    _rewrite(split_dir, test=s.test, users=s.users.iloc[:2])
    with pytest.raises(ContractError, match="user_id"):
        validate_split(split_dir)


def test_risk_bucket_edges():
    got = risk_bucket(pd.Series([0.0, 0.2999, 0.3, 0.6999, 0.7, 1.0]), (0.3, 0.7)).tolist()
    assert got == ["low", "low", "medium", "medium", "high", "high"]


def test_history_maps_into_the_model_vocabulary(split_dir):
    split = read_split(split_dir)
    history = history_from_split(split)
    assert list(history.columns) == HISTORY_COLUMNS + [IN_TEST]
    assert history[C.EVENT_TIME].dt.tz is None  # naive UTC for MLflow
    # a model that knows items 1-4 under other ids and users 0 and 2 (user 1 is new to it)
    model_items = pd.DataFrame({C.ITEM_ID: [1, 2, 3, 4], C.ITEM_KEY: ["item-4", "item-3", "item-2", "item-1"],
                                C.ITEM_NAME: list("dcba"), C.TRAIN_COUNT: [1, 1, 1, 1]})
    model_users = pd.DataFrame({C.USER_ID: [0, 1], C.USER_KEY: ["user-2", "user-0"]})
    mapped, unknown = split_in_model_space(history, model_items, model_users)
    assert unknown == {"unknown_users": 1, "unknown_item_events": 1}  # user-1; item-5 of user 2
    # user-2 (model id 0): the unknown item-5 is dropped from session 1, positions renumbered
    u = pd.concat([mapped.train, mapped.test])
    u0 = u[u[C.USER_ID] == 0].sort_values([C.SESSION_INDEX, C.POSITION])
    assert u0[[C.SESSION_INDEX, C.POSITION, C.ITEM_ID]].values.tolist() == [
        [0, 0, 4], [0, 1, 3], [1, 0, 3], [1, 1, 2], [2, 0, 4], [2, 1, 2],
    ]
    assert u0[C.GAP_BEFORE_SECONDS].isna().tolist() == [True, True, False, False, False, False]
    assert sorted(mapped.test[C.USER_ID].unique()) == [0, 1]
    assert len(mapped.test) == 4 and len(mapped.train) == 9  # 2 users x (2 + 3) train events - item-5
    assert str(mapped.train[C.EVENT_TIME].dt.tz) == "UTC"
    with pytest.raises(ValueError, match="history lacks column"):
        split_in_model_space(history.drop(columns=C.ITEM_KEY), model_items, model_users)


SCORE_IN_A_FRESH_PROCESS = """
import sys
sys.modules["jobs"] = sys.modules["pyspark"] = None  # any import of the Spark jobs fails
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
model.predict(pd.read_parquet(sys.argv[3]), params={"run_date": sys.argv[4], "top_k": 3}).to_parquet(sys.argv[5])
import contract, thrnn
print(thrnn.__file__, contract.__file__, sep="\\n")
"""


@pytest.mark.slow
def test_logged_model_carries_only_the_scoring_code_and_predicts_alone(split_dir, tmp_path):
    """The logged pyfunc's code is the import closure of the pyfunc in thrnn/ and contract/ (no jobs/, no
    pipeline tasks, no training); a fresh process where jobs/ cannot be imported loads it from that code
    and predicts what the in-process wrapper predicts."""
    import mlflow

    from thrnn.config import config_for
    from thrnn.pipeline import registry
    from thrnn.pipeline.pyfunc import ThrnnPyfunc, log_pyfunc, serving_modules
    from thrnn.pipeline.settings import RunPaths
    from thrnn.train import train

    paths = RunPaths(tmp_path / "night")
    shutil.copytree(split_dir, paths.data)
    train(paths.data, paths.train, config_for("paper-lastfm", "thrnn", item_embedding=8, epochs=1, batch_size=3,
                                              device="cpu", history_sessions=3), progress=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.setup_mlflow(uri)
    exp = registry.ensure_experiment("thrnn-pyfunc", (tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    model_uri = log_pyfunc(paths, run.info.run_id, uri)

    code = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "dl"))) / "code"
    shipped = sorted(".".join(p.relative_to(code).with_suffix("").parts).removesuffix(".__init__")
                     for p in code.rglob("*.py"))
    assert shipped == serving_modules()
    assert {p.name for p in code.iterdir()} == {"thrnn", "contract"}
    assert "thrnn.pipeline.tasks" not in shipped and "thrnn.train" not in shipped
    imported = {alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
                for p in code.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}
    assert not imported & {"jobs", "pyspark", "synth", "airflow"}

    history = history_from_split(read_split(paths.data)).drop(columns=IN_TEST)
    history.to_parquet(tmp_path / "history.parquet")
    done = subprocess.run(
        [sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS, uri, model_uri, str(tmp_path / "history.parquet"),
         "2023-12-01", str(tmp_path / "recs.parquet")],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    assert all(Path(f).is_relative_to(tmp_path) for f in done.stdout.split())  # the model's copy, not the repo
    wrapper = ThrnnPyfunc().load(paths.train, paths.root / "model_vocab" / "items.parquet",
                                 paths.root / "model_vocab" / "users.parquet")
    expected = wrapper.predict(None, history, {"run_date": "2023-12-01", "top_k": 3})
    assert len(expected) == 3 * 3  # every user of the split, three items each
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "recs.parquet"), expected)
