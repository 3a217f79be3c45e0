"""Atomic file writes: what readers see is the old file or the whole new one, never a part.

Each write goes to a temporary file in the target's folder (same file system), is flushed to disk,
then renamed over the target; a failure removes the temporary file and leaves the target as it was.
No torch, pandas or Spark here, so the Airflow tasks' state files can use it too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary file object)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) written atomically to ``path``."""
    data = text.encode()
    return atomic_write(path, lambda f: f.write(data))


def write_json_atomic(obj: Any, path: str | Path, *, allow_nan: bool = False) -> Path:
    """``obj`` as indented JSON with sorted keys and a final newline, written atomically. NaN and
    infinities are refused unless ``allow_nan`` (they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n")
