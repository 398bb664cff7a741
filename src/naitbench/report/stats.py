"""Seed-level statistics for comparing selection methods.

At small scale the subset draw and the training seed move scores more than the evaluation
items do, so seeds are the unit of replication: a method's result is a set of replicates
(one per selection or training seed), each holding one score per evaluation item.

- `paired_difference`: mean(method) - mean(reference) with a two-level bootstrap interval:
  each draw resamples the replicates of both sides (with replacement), then resamples the
  evaluation items once and applies the same items to both sides (items are paired).
- `between_seed_sd`: the standard deviation (ddof=1) of the replicate means.
- `rank_among`: 1 + the number of reference replicates that score better than the method.
- `detectable_difference`: the smallest true difference a two-sided test at level `alpha`
  detects with probability `power`, given the seed counts and the between-seed spread:
  (z_{1-alpha/2} + z_{power}) * sd * sqrt(1/n_method + 1/n_reference), with `sd` the
  reference's between-seed standard deviation (the method often has a single replicate).
- `verdict`: one word. "better" / "worse" when the 95% interval lies entirely on that side
  of zero (the metric's direction decides which side is better), "inside noise" when it
  includes zero, "not assessable" with one replicate on each side (the interval then
  reflects evaluation items only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """One method against one reference on one task."""

    difference: float
    low: float
    high: float
    sd_method: float
    sd_reference: float
    rank: int
    n_reference: int
    detectable: float
    verdict: str


BETTER, WORSE, INSIDE_NOISE, NOT_ASSESSABLE = "better", "worse", "inside noise", "not assessable"


def verdict(low: float, high: float, detectable: float, higher_is_better: bool) -> str:
    """One word for an interval of (method - reference): which side of zero it lies on."""
    if math.isinf(detectable):
        return NOT_ASSESSABLE
    if low <= 0 <= high:
        return INSIDE_NOISE
    return BETTER if (low > 0) == higher_is_better else WORSE


def _as_matrix(replicates: list[dict[str, float]], items: list[str]) -> np.ndarray:
    return np.array([[rep[i] for i in items] for rep in replicates], dtype=float)


def common_items(*sides: list[dict[str, float]]) -> list[str]:
    """Items scored in every replicate of every side (paired comparisons need the same items)."""
    sets = [set(rep) for side in sides for rep in side]
    if not sets:
        raise ValueError("no replicates to compare")
    items = sorted(set.intersection(*sets))
    if not items:
        raise ValueError("the replicates share no evaluation items")
    return items


def paired_difference(method: list[dict[str, float]], reference: list[dict[str, float]], *,
                      n_boot: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float, float]:
    """Point difference of means and its two-level bootstrap percentile interval."""
    items = common_items(method, reference)
    a, b = _as_matrix(method, items), _as_matrix(reference, items)
    point = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    n_items = len(items)
    draws = np.empty(n_boot)
    for k in range(n_boot):
        rows_a = rng.integers(0, len(a), len(a))
        rows_b = rng.integers(0, len(b), len(b))
        cols = rng.integers(0, n_items, n_items)
        draws[k] = a[np.ix_(rows_a, cols)].mean() - b[np.ix_(rows_b, cols)].mean()
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return point, float(low), float(high)


def replicate_means(replicates: list[dict[str, float]],
                    items: list[str] | None = None) -> np.ndarray:
    """One mean per replicate, over `items` (all of the replicate's items when None)."""
    if items is None:
        return np.array([np.mean(list(rep.values())) for rep in replicates])
    return _as_matrix(replicates, items).mean(axis=1)


def between_seed_sd(means: np.ndarray) -> float:
    """Sample standard deviation of replicate means; NaN with fewer than two replicates."""
    return float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")


def rank_among(value: float, reference_means: np.ndarray, higher_is_better: bool) -> int:
    """1 = better than every reference replicate; ties count in the method's favour."""
    better = reference_means > value if higher_is_better else reference_means < value
    return 1 + int(np.sum(better))


def detectable_difference(sd: float, n_method: int, n_reference: int, *, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Minimum detectable difference of two means of replicates (normal approximation)."""
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float(z * sd * np.sqrt(1 / n_method + 1 / n_reference))


def compare(method: list[dict[str, float]], reference: list[dict[str, float]], *,
            higher_is_better: bool, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Every statistic the report shows for one method against one reference."""
    items = common_items(method, reference)
    diff, low, high = paired_difference(method, reference, n_boot=n_boot, seed=seed)
    means_m, means_r = replicate_means(method, items), replicate_means(reference, items)
    sd_r = between_seed_sd(means_r)
    sd_m = between_seed_sd(means_m)
    spread = sd_r if not np.isnan(sd_r) else sd_m
    detectable = (detectable_difference(spread, len(method), len(reference))
                  if not np.isnan(spread) else float("inf"))
    return Comparison(difference=diff, low=low, high=high, sd_method=sd_m, sd_reference=sd_r,
                      rank=rank_among(float(means_m.mean()), means_r, higher_is_better),
                      n_reference=len(reference), detectable=detectable,
                      verdict=verdict(low, high, detectable, higher_is_better))
