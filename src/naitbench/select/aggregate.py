"""Shared pieces that turn scores into one ranking (the rules that turn a similarity matrix
into one live in naitbench.select.rules).

- `zscore_mean`: standardise each target's scores over the pool, then average (multi-target
  NAIT, perplexity-style untargeted scores of several targets), so no target dominates by
  scale.
- `rank_scores`: scores that reproduce a picking order under the shared top-ratio cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def zscore_mean(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over targets of each target's z-scored candidate scores."""
    standardised = []
    for values in scores:
        values = np.asarray(values, dtype=np.float64)
        sd = values.std()
        standardised.append((values - values.mean()) / sd if sd > 0 else values * 0.0)
    return np.mean(standardised, axis=0)


def rank_scores(order: Sequence[int], n: int) -> np.ndarray:
    """Scores that reproduce a picking order under top-k selection (first pick highest)."""
    scores = np.full(n, -1.0)
    scores[np.asarray(order, dtype=int)] = np.arange(len(order), 0, -1, dtype=np.float64)
    return scores
