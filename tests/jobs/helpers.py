"""Builders shared by the sessionize tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT


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
