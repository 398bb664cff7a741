"""RDS+ (Ivison et al., 2025): cosine similarity of position-weighted final hidden states.

Representation: the hidden state after the final norm, averaged over every real token of the
formatted sample with weights 1, 2, ..., n (feature spec `final.weighted`, recorded in the
same extraction pass as NAIT's neurons), L2-normalised; similarity: cosine between every
candidate and every target sample. Rule (naitbench.select.rules): RDS+'s own `round_robin`
by default, any other by `rule:`.
"""

from __future__ import annotations

import numpy as np

from naitbench.features.capture import Spec
from naitbench.select.protocol import SelectionContext
from naitbench.select.targeted import SimilaritySelector


def _normalised(features: np.ndarray) -> np.ndarray:
    flat = features.reshape(len(features), -1).astype(np.float64)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


class RDSSelector(SimilaritySelector):
    """Representation-based data selection with the RDS+ representation."""

    default_rule = "round_robin"
    reads_features = True

    def __init__(self, name: str = "rds", spec: str = "final.weighted", **kwargs):
        super().__init__(name, **kwargs)
        site, _, pooling = spec.partition(".")
        self.spec = Spec(site, pooling)

    def vectors(self, ctx: SelectionContext) -> np.ndarray:
        return _normalised(ctx.features("pool", self.spec))

    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        return self.vectors(ctx) @ _normalised(ctx.features(target, self.spec)).T
