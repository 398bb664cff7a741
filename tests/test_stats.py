"""Seed-level statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from naitbench.report.stats import (
    BETTER,
    INSIDE_NOISE,
    NOT_ASSESSABLE,
    WORSE,
    between_seed_sd,
    common_items,
    compare,
    detectable_difference,
    paired_difference,
    rank_among,
    verdict,
)


def _flat(value: float, n_items: int = 5) -> dict[str, float]:
    return {f"q{i}": value for i in range(n_items)}


def test_constant_items_and_seeds_give_a_degenerate_interval():
    diff, low, high = paired_difference([_flat(0.8)], [_flat(0.5), _flat(0.5)], n_boot=200)
    assert diff == pytest.approx(0.3) and low == pytest.approx(0.3) and high == pytest.approx(0.3)


def test_seed_level_resampling_spans_the_replicate_means():
    # Method replicates with means 1 and 3, items constant, reference fixed at 0: resampling
    # two seeds gives means 1, 2, 3 with probabilities 1/4, 1/2, 1/4, so the 95% interval is
    # [1, 3] and the point estimate 2.
    diff, low, high = paired_difference([_flat(1.0), _flat(3.0)], [_flat(0.0)], n_boot=4000)
    assert (diff, low, high) == (pytest.approx(2.0), pytest.approx(1.0), pytest.approx(3.0))


def test_items_are_paired_across_methods():
    # Item difficulty varies a lot but the method is exactly 0.1 better on every item: with
    # pairing the interval collapses to 0.1; unpaired item resampling would be wide.
    base = {f"q{i}": float(i) for i in range(50)}
    better = {k: v + 0.1 for k, v in base.items()}
    _, low, high = paired_difference([better], [base], n_boot=500)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_item_noise_alone_gives_a_narrow_interval_seed_noise_a_wide_one():
    rng = np.random.default_rng(0)
    items = [f"q{i}" for i in range(150)]
    noise = rng.normal(0, 0.05, 150)
    def rep(shift):
        return {k: 0.85 + shift + n for k, n in zip(items, noise, strict=True)}
    one_seed = paired_difference([rep(0.0)], [rep(0.02)], n_boot=500)
    seeds = paired_difference([rep(0.0)], [rep(0.0), rep(0.02), rep(0.006)], n_boot=500)
    assert one_seed[2] - one_seed[1] < 0.001   # identical noise: items alone cannot explain
    assert seeds[2] - seeds[1] > 0.015          # seed spread widens the interval


def test_between_seed_sd_and_rank():
    assert between_seed_sd(np.array([0.847, 0.867, 0.853])) == pytest.approx(0.010263, abs=1e-6)
    assert math.isnan(between_seed_sd(np.array([0.85])))
    refs = np.array([0.847, 0.867, 0.853])
    assert rank_among(0.846, refs, higher_is_better=False) == 1
    assert rank_among(0.850, refs, higher_is_better=False) == 2
    assert rank_among(0.850, refs, higher_is_better=True) == 3
    assert rank_among(0.853, refs, higher_is_better=True) == 2   # a tie counts for the method


def test_detectable_difference_formula():
    # (1.959964 + 0.841621) * 0.01 * sqrt(1/1 + 1/3) = 0.032350
    assert detectable_difference(0.01, 1, 3) == pytest.approx(0.0323497, abs=1e-6)
    assert detectable_difference(0.01, 5, 5) < detectable_difference(0.01, 1, 3)


def test_compare_says_inside_noise_when_seeds_cannot_resolve_it():
    refs = [_flat(0.847), _flat(0.867), _flat(0.853)]
    close = compare([_flat(0.851)], refs, higher_is_better=False, n_boot=500)
    assert close.low <= 0 <= close.high and close.verdict == INSIDE_NOISE
    far = compare([_flat(0.639)], [_flat(0.671), _flat(0.687), _flat(0.669)],
                  higher_is_better=False, n_boot=500)
    assert far.high < 0 and far.rank == 1 and far.verdict == BETTER


def test_the_verdict_word_is_the_side_of_zero_the_interval_lies_on():
    # a negative interval is better for bits per byte (lower is better), worse for accuracy
    assert verdict(-0.02, -0.01, 0.005, higher_is_better=False) == BETTER
    assert verdict(-0.02, -0.01, 0.005, higher_is_better=True) == WORSE
    assert verdict(0.01, 0.02, 0.005, higher_is_better=True) == BETTER
    assert verdict(0.01, 0.02, 0.005, higher_is_better=False) == WORSE
    # the interval alone decides: a difference below the detectable one keeps its side
    assert verdict(0.001, 0.002, 0.05, higher_is_better=True) == BETTER
    assert verdict(-0.01, 0.0, 0.005, higher_is_better=True) == INSIDE_NOISE
    assert verdict(0.01, 0.02, math.inf, higher_is_better=True) == NOT_ASSESSABLE


def test_items_must_overlap():
    with pytest.raises(ValueError, match="share no evaluation items"):
        common_items([{"a": 1.0}], [{"b": 1.0}])


def test_single_replicates_say_seed_noise_cannot_be_assessed():
    result = compare([_flat(0.8)], [_flat(0.5)], higher_is_better=True, n_boot=100)
    assert math.isinf(result.detectable)
    assert result.verdict == NOT_ASSESSABLE
