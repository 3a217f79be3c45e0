"""Hostile DAG params: paths that climb out, control characters, quotes. Refused by ``validate_params``,
which every task calls first, so nothing is read or written. ``tests/pipeline/test_params_settings.py``
already pins ``dataset='../etc'`` and a run date of ``'2026-01-02/../../x'``."""

from __future__ import annotations

import pytest

from thrnn.pipeline.params import ParamError, validate_params
from thrnn.pipeline.settings import PipelineSettings


@pytest.mark.parametrize("path", ["../raw.tsv", "/data/../etc/passwd", "raw/..", "s3a://bucket/a/../b.tsv",
                                  "C:\\raw\\..\\x.tsv"])
def test_input_paths_with_dot_dot_components_are_refused(path):
    with pytest.raises(ParamError, match=r"^param 'input_paths\[1\]' must not hold '\.\.' path components, got "):
        validate_params({"input_paths": ["/data/ok.tsv", path]})


@pytest.mark.parametrize("path", ["raw\x00.tsv", "raw.tsv\n", "raw\r.tsv", "\x1b[2Jraw.tsv", "raw\x7f.tsv"])
def test_input_paths_with_control_characters_are_refused(path):
    with pytest.raises(ParamError) as err:
        validate_params({"input_paths": [path]})
    assert str(err.value) == (f"param 'input_paths[0]' must not hold control characters (NUL, line breaks, ...), "
                              f"got {path!r}")


def test_quotes_spaces_and_dots_in_a_file_name_are_a_path_like_any_other():
    names = ["/data/night 'one' \"1\".tsv", "/data/raw..2009.tsv", "hdfs://nn/raw/.hidden.tsv"]
    assert validate_params({"input_paths": names}).input_paths == tuple(names)


@pytest.mark.parametrize("dataset", ["last\x00fm", "lastfm\n", "a/b", "..", "x'; DROP TABLE churn_risk; --",
                                     '"lastfm"', "lastfm/../../etc"])
def test_a_hostile_dataset_name_never_reaches_a_path(dataset, tmp_path):
    with pytest.raises(ParamError, match=r"^param 'dataset' must match "):
        validate_params({"dataset": dataset})
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    for day in ("2026-01-02\x00", "2026-01-02/..", "../2026-01-02"):
        with pytest.raises(ValueError):
            settings.run_paths("lastfm", day)
