"""Fixtures of the reliability tests: the pipeline tests' throwaway PostgreSQL server, a tiny file
system that runs out of space, a folder made read-only."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.pipeline.conftest import PG_CTL, pg_url  # noqa: F401 - fixtures

if PG_CTL:
    from tests.pipeline.conftest import postgresql, postgresql_proc  # noqa: F401 - fixtures


@pytest.fixture
def tiny_fs(tmp_path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a real "No space left on device" (root only; skips where mounting is refused)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    free = shutil.disk_usage(folder).free - leave
    (folder / "filler").write_bytes(b"\0" * max(free, 0))


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new entries, renames and removals, for root too: chmod when not root, the
    immutable attribute (chattr +i) when root (chmod does not stop root); skips when neither works."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"running as root and chattr +i is refused here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
