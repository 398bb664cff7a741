"""RDS+ (Ivison et al., 2025): cosine similarity of position-weighted final hidden states.

Representation: the hidden state after the final norm, averaged over every real token of the
formatted sample with weights 1, 2, ..., n (feature spec `final.weighted`, recorded in the
same extraction pass as NAIT's neurons), L2-normalised. Similarity: cosine between every
candidate and every target sample. Aggregation (naitbench.select.aggregate): `max` or `mean`
over the target samples of all targets, or `round_robin` in which target samples (one
target) or targets (several; each target's column is its best cosine) take turns picking.
"""

from __future__ import annotations

import numpy as np

from naitbench.features.capture import Spec
from naitbench.select.aggregate import rank_scores, reduce_samples, round_robin
from naitbench.select.protocol import SelectionContext, Selector


def _normalised(features: np.ndarray) -> np.ndarray:
    flat = features.reshape(len(features), -1).astype(np.float64)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


class RDSSelector(Selector):
    """Representation-based data selection with the RDS+ recipe."""

    targeted = True

    def __init__(self, name: str = "rds", spec: str = "final.weighted",
                 aggregation: str = "round_robin", **kwargs):
        super().__init__(name, **kwargs)
        site, _, pooling = spec.partition(".")
        self.spec, self.aggregation = Spec(site, pooling), aggregation
        if aggregation not in ("max", "mean", "round_robin"):
            raise ValueError(f"aggregation={aggregation!r}: use max, mean or round_robin")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        pool = _normalised(ctx.features("pool", self.spec))
        sims = [pool @ _normalised(ctx.features(t, self.spec)).T for t in ctx.targets]
        if self.aggregation != "round_robin":
            return reduce_samples(np.concatenate(sims, axis=1), self.aggregation)
        columns = sims[0] if len(sims) == 1 else np.stack([s.max(axis=1) for s in sims], 1)
        return rank_scores(round_robin(columns, len(pool)), len(pool))
