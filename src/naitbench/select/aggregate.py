"""Shared ways to turn per-target-sample or per-target scores into one ranking.

- `zscore_mean`: standardise each target's scores over the pool, then average (NAIT's
  multi-target default, so no target dominates by scale).
- `reduce_samples`: a [candidates, target samples] similarity matrix -> one score per
  candidate, by `max` or `mean` over the target samples.
- `round_robin`: target samples (or targets) take turns picking their most similar
  not-yet-chosen candidate until the budget is filled.
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


def reduce_samples(similarity: np.ndarray, how: str) -> np.ndarray:
    """[n_candidates, n_target_samples] -> [n_candidates] by max or mean."""
    if how == "max":
        return similarity.max(axis=1)
    if how == "mean":
        return similarity.mean(axis=1)
    raise ValueError(f"unknown aggregation {how!r}: use max, mean or round_robin")


def round_robin(similarity: np.ndarray, budget: int) -> list[int]:
    """Candidate indices in picking order: column j (a target sample or target) picks its
    most similar remaining candidate on its turn; ties go to the lower index."""
    n_candidates, n_columns = similarity.shape
    if not 0 < budget <= n_candidates:
        raise ValueError(f"budget {budget} outside 1..{n_candidates}")
    preferences = np.argsort(-similarity, axis=0, kind="stable")
    cursor = np.zeros(n_columns, dtype=int)
    chosen: list[int] = []
    taken = np.zeros(n_candidates, dtype=bool)
    while len(chosen) < budget:
        for column in range(n_columns):
            while taken[preferences[cursor[column], column]]:
                cursor[column] += 1
            pick = int(preferences[cursor[column], column])
            taken[pick] = True
            chosen.append(pick)
            if len(chosen) == budget:
                break
    return chosen


def rank_scores(order: Sequence[int], n: int) -> np.ndarray:
    """Scores that reproduce a picking order under top-k selection (first pick highest)."""
    scores = np.full(n, -1.0)
    scores[np.asarray(order, dtype=int)] = np.arange(len(order), 0, -1, dtype=np.float64)
    return scores
