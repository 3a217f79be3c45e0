"""Fixtures of the pipeline tests: a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), None)
    return str(found) if found else None


PG_CTL = _pg_ctl()

if PG_CTL:
    from pytest_postgresql import factories

    os.environ.setdefault("THRNN_REAL_PG_CTL", PG_CTL)
    postgresql_proc = factories.postgresql_proc(executable=str(HERE / "pg_ctl_wrapper.sh"), port=None)
    postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def pg_url(request) -> str:
    """URL of a fresh database on a throwaway PostgreSQL server (skips when pg_ctl is absent)."""
    if not PG_CTL:
        pytest.skip("PostgreSQL server binaries (pg_ctl) not installed; .ci/run installs them")
    conn = request.getfixturevalue("postgresql")
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
