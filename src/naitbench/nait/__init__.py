"""NAIT: neuron-activation-aware selection of instruction data (docs/nait.md)."""

from naitbench.nait.library import FeatureLibrary, build_library, score_pool

__all__ = ["FeatureLibrary", "build_library", "score_pool"]
