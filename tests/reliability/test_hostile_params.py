"""Hostile DAG params: paths that climb out, control characters, quotes. Refused by ``validate_params``,
which every task calls first, so nothing is read or written. ``tests/pipeline/test_params_settings.py``
already pins ``dataset='../etc'`` and a run date of ``'2026-01-02/../../x'``. A run date given as text is
refused where it becomes a ``datetime.date`` (``parse_run_date``); ``run_paths`` takes dates only."""

from __future__ import annotations

import datetime as dt

import pytest

from thrnn.pipeline.params import ParamError, validate_params
from thrnn.pipeline.settings import PipelineSettings, parse_run_date
from thrnn.pipeline.tasks import run_date_of


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
def test_a_hostile_dataset_name_never_reaches_a_path(dataset):
    with pytest.raises(ParamError, match=r"^param 'dataset' must match "):
        validate_params({"dataset": dataset})


@pytest.mark.parametrize("day", ["2026-01-02\x00", "2026-01-02/..", "../2026-01-02", "2026-01-02\n",
                                 "2026-01-02T00:00:00/../../x", " 2026-01-02", "20260102"])
def test_a_hostile_run_date_never_reaches_a_path(day, tmp_path):
    """A text run date is refused where it becomes a date (``run_date_of`` for a logical date given as
    text); the run folder is named by the date alone, so it stays under runs/<dataset>."""
    with pytest.raises(ValueError, match=r"^a run date must be YYYY-MM-DD, got "):
        parse_run_date(day)
    with pytest.raises(ValueError, match=r"^a run date must be YYYY-MM-DD, got "):
        run_date_of({"logical_date": day})
    settings = PipelineSettings.from_env({"THRNN_HOME": str(tmp_path)})
    with pytest.raises(TypeError, match=r"^run_date must be a datetime.date, got str "):
        settings.run_paths("lastfm", day)  # the string itself never becomes a folder name
    with pytest.raises(TypeError, match=r"^run_date must be a datetime.date, got datetime "):
        settings.run_paths("lastfm", dt.datetime(2026, 1, 2, 2))  # its isoformat would carry a time
    paths = settings.run_paths("lastfm", parse_run_date("2026-01-02"))
    assert paths.root == tmp_path.resolve() / "runs" / "lastfm" / "2026-01-02"
