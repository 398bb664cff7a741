"""Subset-level statistics against hand-computed cases (calibration: test_calibration.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from naitbench.report.stats import (
    BETTER,
    INSIDE_NOISE,
    NOT_ASSESSABLE,
    WORSE,
    arm,
    between_seed_sd,
    common_items,
    compare,
    design_noise,
    detectable_difference,
    difference_noise,
    family_verdict,
    holm,
    power_at,
    rank_among,
    verdict,
)


def _flat(value: float, n_items: int = 5) -> dict[str, float]:
    return {f"q{i}": value for i in range(n_items)}


def _subsets(*values: float) -> list[list[dict[str, float]]]:
    """One subset per value, one training seed each."""
    return [[_flat(v)] for v in values]


def test_constant_subsets_give_a_degenerate_interval():
    result = compare([[_flat(0.8)]], _subsets(0.5, 0.5), higher_is_better=True)
    assert result.difference == pytest.approx(0.3) and result.se == 0
    assert result.low == pytest.approx(0.3) == result.high and result.verdict == BETTER


def test_one_subset_against_random_subsets_is_a_prediction_interval():
    # 0.639 against 0.671, 0.687, 0.669 (sd 0.0098658): se = sd * sqrt(1 + 1/3), t on 2 df
    result = compare([[_flat(0.639)]], _subsets(0.671, 0.687, 0.669), higher_is_better=False)
    se = 0.0098658 * math.sqrt(4 / 3)
    assert result.se == pytest.approx(se, rel=1e-4) and result.df == pytest.approx(2)
    assert result.low == pytest.approx(-0.0366667 - 4.302653 * se, rel=1e-4)
    assert result.verdict == INSIDE_NOISE and result.rank == 1   # 3.7 sd, but only 2 df


def test_training_seeds_of_one_subset_do_not_count_as_subsets():
    # two training seeds of one subset far apart leave the subset-draw noise unchanged:
    # the same se as one seed at their mean (the random subsets have one seed each)
    one = compare([[_flat(0.64)]], _subsets(0.67, 0.69, 0.66, 0.68), higher_is_better=False)
    two = compare([[_flat(0.63), _flat(0.65)]], _subsets(0.67, 0.69, 0.66, 0.68),
                  higher_is_better=False)
    assert two.se == pytest.approx(one.se) and two.df == pytest.approx(one.df)
    assert two.n_subsets == 1 and two.sd_within == pytest.approx(0.0141421, rel=1e-4)


def test_fewer_training_seeds_than_the_random_subsets_add_training_noise():
    # random subsets with two seeds each (within sd 0.01): a one-seed method carries
    # s_w^2 (1 - 1/2) on top of a random subset mean's variance
    random = [[_flat(m - 0.005), _flat(m + 0.005)] for m in (0.67, 0.69, 0.66, 0.68)]
    result = compare([[_flat(0.64)]], random, higher_is_better=False)
    s_r2 = np.var([0.67, 0.69, 0.66, 0.68], ddof=1)
    s_w2 = 0.005**2 * 2                      # each subset: two seeds 0.01 apart
    assert result.se == pytest.approx(math.sqrt(s_r2 * (1 + 1 / 4) + s_w2 / 2))
    assert 3 < result.df < 3 + 8               # Satterthwaite between the two mean squares


def test_several_selection_seeds_pool_both_arms_spread():
    method = _subsets(0.60, 0.64)
    reference = _subsets(0.67, 0.69, 0.66, 0.68, 0.70)
    result = compare(method, reference, higher_is_better=False)
    pooled = (np.var([0.60, 0.64], ddof=1) + 4 * np.var([0.67, 0.69, 0.66, 0.68, 0.70],
                                                        ddof=1)) / 5
    assert result.se == pytest.approx(math.sqrt(pooled * (1 / 2 + 1 / 5)))
    assert result.df == pytest.approx(5) and result.sd_method == pytest.approx(0.0282843, abs=1e-6)
    # the method's own spread counts: a wider spread at the same mean widens the interval
    wider = compare(_subsets(0.56, 0.68), reference, higher_is_better=False)
    assert wider.se > result.se and wider.difference == pytest.approx(result.difference)


def test_items_are_paired_across_arms():
    # item difficulty varies a lot but every model shifts all items alike: only the subset
    # means matter, so the interval equals the one for constant items
    base = {f"q{i}": float(i) for i in range(50)}
    shifted = [[{k: v + s for k, v in base.items()}] for s in (0.01, 0.03, 0.0, 0.02)]
    flat = _subsets(0.01, 0.03, 0.0, 0.02)
    a = compare([[{k: v - 0.05 for k, v in base.items()}]], shifted, higher_is_better=False)
    b = compare([[_flat(-0.05)]], flat, higher_is_better=False)
    assert (a.difference, a.se) == (pytest.approx(b.difference), pytest.approx(b.se))
    assert a.difference == pytest.approx(-0.05 - 0.015) and a.verdict == b.verdict


def test_single_subsets_on_both_sides_cannot_be_assessed():
    result = compare([[_flat(0.8), _flat(0.81)]], [[_flat(0.5)]], higher_is_better=True)
    assert math.isinf(result.detectable) and math.isnan(result.se)
    assert result.verdict == NOT_ASSESSABLE
    # with the random subsets as the spread source (full data against a method), it can
    spread = _subsets(0.50, 0.52, 0.49)
    with_spread = compare([[_flat(0.8)]], [[_flat(0.5)]], higher_is_better=True,
                          spread=spread)
    assert with_spread.se == pytest.approx(math.sqrt(2) * float(np.std([0.5, 0.52, 0.49],
                                                                       ddof=1)))


def test_arm_summary_handles_unequal_seed_counts():
    table = np.array([[1.0, 3.0], [5.0, np.nan], [6.0, np.nan]])
    a = arm(table)
    assert a.mean == pytest.approx((2 + 5 + 6) / 3) and a.subsets == 3
    assert a.inv_seeds == pytest.approx((0.5 + 1 + 1) / 3)
    assert a.ss_within == pytest.approx(2.0) and a.df_within == 1


def test_vectorised_batches_match_one_by_one():
    rng = np.random.default_rng(0)
    method, reference = rng.normal(0, 1, (7, 1, 2)), rng.normal(0, 1, (7, 5, 1))
    batch = difference_noise(method, reference)
    for k in range(7):
        single = difference_noise(method[k], reference[k])
        assert all(float(b[k]) == pytest.approx(float(s)) for b, s in zip(batch, single,
                                                                          strict=True))


def test_detectable_difference_gives_the_promised_power():
    # normal limit: (z_0.975 + z_0.8) * se = 2.8016 * se
    assert detectable_difference(0.01, np.inf) == pytest.approx(0.028016, abs=1e-5)
    # t on 4 df: the noncentral t reaches 80% power at the detectable difference
    d = float(detectable_difference(0.01, 4.0))
    exact = (stats.nct.sf(stats.t.ppf(0.975, 4), 4, d / 0.01)
             + stats.nct.cdf(-stats.t.ppf(0.975, 4), 4, d / 0.01))
    assert exact == pytest.approx(0.8, abs=1e-3) and float(power_at(d, 0.01, 4.0)) == \
        pytest.approx(0.8, abs=1e-3)
    assert detectable_difference(0.01, 20.0) < d
    assert math.isinf(detectable_difference(float("nan"), 4.0))


def test_design_noise_is_the_estimator_at_its_expected_mean_squares():
    # one subset, one seed against five random subsets: se = sqrt((b + w)(1 + 1/5)), df 4
    se, df = design_noise(0.01, 0.01, method_subsets=1, method_seeds=1, reference_subsets=5,
                          reference_seeds=1)
    assert se == pytest.approx(math.sqrt(2e-4 * 1.2)) and df == pytest.approx(4)
    se2, df2 = design_noise(0.01, 0.01, method_subsets=2, method_seeds=1,
                            reference_subsets=5, reference_seeds=1)
    assert se2 == pytest.approx(math.sqrt(2e-4 * 0.7)) and df2 == pytest.approx(5)


def test_between_seed_sd_and_rank():
    assert between_seed_sd(np.array([0.847, 0.867, 0.853])) == pytest.approx(0.010263, abs=1e-6)
    assert math.isnan(between_seed_sd(np.array([0.85])))
    refs = np.array([0.847, 0.867, 0.853])
    assert rank_among(0.846, refs, higher_is_better=False) == 1
    assert rank_among(0.850, refs, higher_is_better=False) == 2
    assert rank_among(0.850, refs, higher_is_better=True) == 3
    assert rank_among(0.853, refs, higher_is_better=True) == 2   # a tie counts for the method


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


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])      # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])             # a family of one: unadjusted
    # 0.03 alone is significant; in a family of four it is not
    assert family_verdict(-0.02, 0.03, higher_is_better=False) == BETTER
    assert family_verdict(-0.02, holm([0.03, 0.5, 0.5, 0.5])[0], higher_is_better=False) \
        == INSIDE_NOISE
    assert family_verdict(0.02, 0.001, higher_is_better=False) == WORSE


def test_items_must_overlap():
    with pytest.raises(ValueError, match="share no evaluation items"):
        common_items([[{"a": 1.0}]], [[{"b": 1.0}]])
