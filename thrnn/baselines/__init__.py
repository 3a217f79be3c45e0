"""Baselines of docs/design.md §5 on the same split and protocol as the models, and the
``thrnn baselines`` CLI.

The session-aware (personal-history) baselines live in :mod:`thrnn.baselines.session_aware` (and the
session-kNN in :mod:`thrnn.baselines.sknn`); :func:`next_session_lists` gives their ranking for every
user's next session (fallback publishing).
"""

from thrnn.baselines.cli import configure_parser, main, neural_baselines, non_neural_baselines, run_baselines
from thrnn.baselines.protocol import validation_split
from thrnn.baselines.session_aware import SESSION_AWARE, next_session_lists

__all__ = ["SESSION_AWARE", "configure_parser", "main", "neural_baselines", "next_session_lists",
           "non_neural_baselines", "run_baselines", "validation_split"]
