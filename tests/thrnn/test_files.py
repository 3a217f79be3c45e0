"""thrnn.files: atomic writes leave the old file or the whole new one."""

from __future__ import annotations

import math

import pytest

from thrnn.files import atomic_write, atomic_write_text, write_json_atomic


def test_json_bytes_and_nan_rule(tmp_path):
    path = write_json_atomic({"b": 1, "a": [1.5, None]}, tmp_path / "sub" / "x.json")
    assert path.read_bytes() == b'{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json_atomic({"a": math.nan}, path)
    assert path.read_bytes().startswith(b'{\n  "a": [')  # the refused write left the old file
    write_json_atomic({"a": math.nan}, path, allow_nan=True)
    assert path.read_text() == '{\n  "a": NaN\n}\n'


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "old")

    def half_then_fail(f):
        f.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
