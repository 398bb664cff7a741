"""NAIT-Bench: a data-versioned benchmark suite for instruction-tuning data selection."""

__version__ = "0.1.0"
