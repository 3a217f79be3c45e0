"""The throwaway PostgreSQL server of the pipeline tests, for the reliability tests too."""

from __future__ import annotations

from tests.pipeline.conftest import PG_CTL, pg_url  # noqa: F401 - fixtures

if PG_CTL:
    from tests.pipeline.conftest import postgresql, postgresql_proc  # noqa: F401 - fixtures
