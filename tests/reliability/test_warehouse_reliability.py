"""The warehouse under failure: killed DuckDB and PostgreSQL publishers, a folder that cannot be written,
a full disk, a night refused before its commit, readers."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.pipeline.conftest import night_frames
from thrnn.pipeline import warehouse as W
from thrnn.pipeline.checks import ContractError, check_published

from .conftest import fill, read_only

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)

# a publisher killed (SIGKILL) while it writes its staging copy: the lock dies with it, the copy stays
KILLED_PUBLISHER = """
import datetime as dt, os, signal, sys
sys.path.insert(0, {repo!r})
from tests.pipeline.conftest import night_frames
from thrnn.pipeline import warehouse as W
def die(run):
    run("CREATE TABLE half_done AS SELECT 1 AS x", [])  # not checkpointed: a WAL exists
    os.kill(os.getpid(), signal.SIGKILL)
W.migrate = die
day = dt.date(2026, 1, 2)
W.connect("duckdb://{path}").publish("demo", day, night_frames(day, version=2))
"""


def _staging(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".staging-" in p.name)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_the_next_publish_removes_the_staging_files_of_a_killed_publisher(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1))
    killed = subprocess.run([sys.executable, "-c", KILLED_PUBLISHER.format(repo=str(REPO), path=str(path))],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = _staging(path)
    assert len(left) == 2 and left[1] == left[0] + ".wal", left
    assert path.with_name(left[0]).stat().st_size > 0
    assert wh.latest_night("demo") == D1  # the live file never saw the killed night
    wh.publish("demo", D3, night_frames(D3))
    assert _staging(path) == []
    assert wh.latest_night("demo") == D3
    assert wh.read_night(W.MODEL_RUNS, "demo", D2).empty


def test_staging_files_of_live_pids_stay_unless_too_old(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1))
    dead, live = _dead_pid(), os.getppid()  # our parent is alive and is not a publisher
    for name in (f".{path.name}.staging-{dead}", f".{path.name}.staging-{dead}.wal",
                 f".{path.name}.staging-{live}", f".{path.name}.staging-{live}.wal"):
        path.with_name(name).write_bytes(b"x" * 1024)
    unrelated = path.with_name(f".{path.name}.staging-notapid")
    unrelated.write_bytes(b"keep")
    wh.publish("demo", D2, night_frames(D2))
    assert _staging(path) == sorted([unrelated.name, f".{path.name}.staging-{live}",
                                     f".{path.name}.staging-{live}.wal"])
    old = time.time() - W.STALE_STAGING_SECONDS - 60
    for name in (f".{path.name}.staging-{live}", f".{path.name}.staging-{live}.wal"):
        os.utime(path.with_name(name), (old, old))
    wh.publish("demo", D3, night_frames(D3))
    assert _staging(path) == [unrelated.name]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def wh(request, tmp_path) -> W.Warehouse:
    if request.param == "duckdb":
        return W.connect(f"duckdb://{tmp_path / 'w.duckdb'}")
    return W.connect(request.getfixturevalue("pg_url"))


def test_a_night_refused_before_the_commit_is_never_visible(wh):
    wh.publish("demo", D1, night_frames(D1, version=1))
    before = {t: wh.read_night(t, "demo", D1) for t in W.TABLE_COLUMNS}

    def verify(reader: W.Warehouse) -> None:
        check_published(reader, "demo", D1, expected_users=2, top_k=3, risk_thresholds=(0.3, 0.7))

    bad = night_frames(D1, version=2)
    bad[W.CHURN_RISK].loc[0, "p_return_30d"] = 1.5
    with pytest.raises(ContractError, match="probabilities outside"):
        wh.publish("demo", D1, bad, verify=verify)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(wh.read_night(table, "demo", D1), frame)
    # the reader sees the transaction's rows: a good night passes and is committed
    seen = []
    wh.publish("demo", D1, night_frames(D1, version=3), verify=lambda r: seen.append(
        r.query("SELECT DISTINCT model_version FROM churn_risk WHERE run_date = ?", [D1]).iloc[0, 0]))
    assert seen == [3] and set(wh.read_night(W.CHURN_RISK, "demo", D1)["model_version"]) == {3}


def test_duckdb_readers_see_a_new_night_once_every_connection_of_the_process_is_closed(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1))
    newest = "SELECT MAX(run_date) FROM model_runs"
    first = duckdb.connect(str(path), read_only=True)
    assert first.execute(newest).fetchone()[0] == D1
    wh.publish("demo", D2, night_frames(D2))
    # the open connection keeps its night; so does a new connection of the same process while it is open
    assert first.execute(newest).fetchone()[0] == D1
    second = duckdb.connect(str(path), read_only=True)
    assert second.execute(newest).fetchone()[0] == D1
    second.close()
    assert wh.latest_night("demo") == D1  # the publisher's own reads too
    # another process sees the new night at once
    other = subprocess.run([sys.executable, "-c", f"import duckdb; print(duckdb.connect({str(path)!r}, "
                            f"read_only=True).execute({newest!r}).fetchone()[0])"], capture_output=True, text=True)
    assert other.stdout.strip() == str(D2), other.stderr
    first.close()
    third = duckdb.connect(str(path), read_only=True)
    assert third.execute(newest).fetchone()[0] == D2
    third.close()


@pytest.mark.postgres
def test_postgres_readers_see_a_new_night_at_their_next_statement(request):
    import psycopg

    url = request.getfixturevalue("pg_url")
    wh = W.connect(url)
    wh.publish("demo", D1, night_frames(D1))
    with psycopg.connect(url, autocommit=True) as reader:
        newest = "SELECT MAX(run_date) FROM model_runs"
        assert reader.execute(newest).fetchone()[0] == D1
        wh.publish("demo", D2, night_frames(D2))
        assert reader.execute(newest).fetchone()[0] == D2  # same connection, next statement


# --- a warehouse folder that cannot be written --------------------------------------------------------------
def _same_nights(wh: W.Warehouse, before: dict[str, pd.DataFrame]) -> None:
    for table, frame in before.items():
        pd.testing.assert_frame_equal(wh.read_night(table, "demo", D1), frame)
    assert wh.latest_night("demo") == D1


def test_a_read_only_warehouse_folder_fails_the_publish_and_keeps_the_night(tmp_path):
    path = tmp_path / "wh" / "warehouse.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1))
    before = {t: wh.read_night(t, "demo", D1) for t in W.TABLE_COLUMNS}
    with read_only(path.parent), pytest.raises(
            W.PublishError, match=rf"^cannot publish demo {D2} to {path}: .*(Operation not permitted|Permission denied)"):
        wh.publish("demo", D2, night_frames(D2, version=2))
    _same_nights(wh, before)
    assert _staging(path) == []
    wh.publish("demo", D2, night_frames(D2, version=2))  # once writable again, the night goes through
    assert wh.latest_night("demo") == D2


def test_a_full_disk_fails_the_publish_and_keeps_the_night(tiny_fs):
    path = tiny_fs / "warehouse.duckdb"
    wh = W.connect(f"duckdb://{path}")
    wh.publish("demo", D1, night_frames(D1))
    before = {t: wh.read_night(t, "demo", D1) for t in W.TABLE_COLUMNS}
    fill(tiny_fs, leave=path.stat().st_size // 2)  # no room for the staging copy
    with pytest.raises(W.PublishError, match=rf"^cannot publish demo {D2} to {path}: .*No space left on device"):
        wh.publish("demo", D2, night_frames(D2, version=2))
    assert _staging(path) == []
    (tiny_fs / "filler").unlink()
    _same_nights(wh, before)


# --- a PostgreSQL publisher killed inside its transaction ---------------------------------------------------
# SIGKILL at three points of the transaction: after the DDL and migrations, in the middle of a COPY,
# and after every row is written (in the check before the commit)
KILLED_PG_PUBLISHER = """
import datetime as dt, os, signal, sys
sys.path.insert(0, {repo!r})
from tests.pipeline.conftest import night_frames
from thrnn.pipeline import warehouse as W
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
point, verify = {point!r}, None
if point == "migrate":
    W.migrate = die
elif point == "copy":
    rows = W._python_rows
    def half(frame):
        out = rows(frame)
        yield from out[: len(out) // 2]
        die()
    W._python_rows = half
else:
    verify = die
day = dt.date(2026, 1, 1)
W.connect({url!r}).publish("demo", day, night_frames(day, version=2, users=("u1", "u2", "u3")), verify=verify)
"""


@pytest.mark.postgres
@pytest.mark.parametrize("point", ["migrate", "copy", "verify"])
def test_a_postgres_publisher_killed_in_its_transaction_leaves_the_previous_night(request, point):
    url = request.getfixturevalue("pg_url")
    wh = W.connect(url)
    wh.publish("demo", D1, night_frames(D1, version=1))
    before = {t: wh.read_night(t, "demo", D1) for t in W.TABLE_COLUMNS}
    killed = subprocess.run([sys.executable, "-c", KILLED_PG_PUBLISHER.format(repo=str(REPO), url=url, point=point)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    _same_nights(wh, before)
    # the server rolled the dead session back and freed its lock: the next publisher is not blocked
    done = subprocess.run([sys.executable, "-c", KILLED_PG_PUBLISHER.format(repo=str(REPO), url=url, point="none")
                           .replace("verify = die", "verify = None")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(wh.read_night(W.CHURN_RISK, "demo", D1)["user_key"]) == ["u1", "u2", "u3"]
    assert set(wh.read_night(W.CHURN_RISK, "demo", D1)["model_version"]) == {2}
