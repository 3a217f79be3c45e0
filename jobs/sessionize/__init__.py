"""Spark sessionization of raw interaction logs into the train/test splits of docs/design.md §3.

``python -m jobs.sessionize --help`` (or ``spark-submit jobs/sessionize/__main__.py ...``) runs it from
the command line; the DAG calls :func:`run`.
"""

from jobs.sessionize.job import EventsOptions, SessionizeError, run
from jobs.sessionize.transforms import SessionRules

__all__ = ["EventsOptions", "SessionRules", "SessionizeError", "run"]
