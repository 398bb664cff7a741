"""Activation features: forward hooks that pool per-layer activations, and the on-disk store
that keeps them so every later layer choice or ratio needs no new forward pass."""

from naitbench.features.capture import FORWARD_PASSES, Spec, parse_specs
from naitbench.features.store import FeatureStore, ensure_features

__all__ = ["FORWARD_PASSES", "FeatureStore", "Spec", "ensure_features", "parse_specs"]
