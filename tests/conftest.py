"""Fixtures and builders shared by the whole suite: one session-scoped Spark session, the shared real data,
small hand-made session splits and generated raw logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def shared_file(relative: str) -> Path:
    """Path of a file under ../shared/data, skipping the test with a clear reason when absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real-data excerpt {path} is absent (../shared/data is not beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent (../shared/data is not beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local Spark session for the whole test run (local[2], one shuffle partition)."""
    from jobs.spark import build_spark

    session = build_spark(
        app_name="thrnn-tests",
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
            "spark.ui.enabled": "false",
            "spark.sql.session.timeZone": "UTC",
        },
    )
    yield session
    session.stop()



# ----------------------------------------------------------------------------------------------- builders
H = 3600.0
T0 = 1_200_000_000.0  # 2008-01-10


def tiny_sessions(n_users: int = 6, n_items: int = 12, seed: int = 0, max_sessions: int = 8
                  ) -> dict[int, list[list[tuple[int, float]]]]:
    """Random users with 3..max_sessions sessions of 2..6 events, gaps of 2..200 h."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(n_users):
        t = T0 + u * 1000.0
        sessions = []
        for _ in range(int(rng.integers(3, max_sessions + 1))):
            t += float(rng.uniform(2, 200)) * H
            length = int(rng.integers(2, 7))
            items = rng.integers(1, n_items + 1, size=length)
            sessions.append([(int(i), t + 60.0 * k) for k, i in enumerate(items)])
            t = sessions[-1][-1][1]
        out[u] = sessions
    return out


def tiny_split(tmp_path=None, **kw):  # noqa: ANN201 - thrnn.io.Split
    """The split of :func:`tiny_sessions` (written to ``tmp_path`` when given)."""
    from thrnn.io import split_from_sessions

    return split_from_sessions(tiny_sessions(**kw), tmp_path)


def synthesize(tmp_path: Path, fmt: str, events: int, malformed: float, seed: int) -> tuple[Path, dict[str, Any]]:
    """A raw log of ``fmt`` written by ``python -m synth`` (as a user would run it) and its
    summary (``malformed_by_kind`` and the rest)."""
    out = tmp_path / f"{fmt}.txt"
    summary = subprocess.run(
        [sys.executable, "-m", "synth", "--format", fmt, "--events", str(events), "--out", str(out),
         "--seed", str(seed), "--malformed-fraction", str(malformed), "--no-progress", "--no-gzip"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    return out, json.loads(summary)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
