"""THRNN: hierarchical GRU recommender joined with a point-process model of return time."""

__version__ = "0.1.0"
