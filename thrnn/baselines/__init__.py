"""Baselines of SPEC §5 on the same split and protocol as the models, and the ``thrnn baselines`` CLI."""

from thrnn.baselines.cli import configure_parser, main, neural_baselines, non_neural_baselines, run_baselines

__all__ = ["configure_parser", "main", "neural_baselines", "non_neural_baselines", "run_baselines"]
