"""Subset-level statistics: is this method's subset better than a random subset?

The unit of replication is the subset draw. Each replicate (one trained model) is reduced to
its mean over the evaluation items that both arms scored, so item difficulty cancels (items
are paired across arms) and a replicate's item-level noise is part of its own deviation. An
arm's replicate means follow a two-level model:

    y_jk = mu + b_j + w_jk,   b_j: draw of subset j (variance s_b^2),
                              w_jk: training seed k of subset j (variance s_w^2)

An arm's mean is the plain mean of its J subset means (m_j training seeds each); its variance
is mean_j(s_b^2 + s_w^2 / m_j) / J. Estimates:
- both arms with several subsets (random subsets against a method with several selection
  seeds): the pooled variance of subset means, both arms' spreads counted, on J_m + J_r - 2
  df (Welch's separate variances were liberal with two subsets in the calibration test);
  where the method's subsets have fewer training seeds than the reference's, the training
  noise they carry on top, s_w^2 (q_m - q_r) / J_m with q the mean of 1/m_j, is added;
- an arm with one subset borrows the variance of one random subset's mean, s_r^2: its own
  training seeds cannot shrink the subset draw's share, and the share they do shrink is not
  taken off (estimating s_w^2 from a few seeds costs more df than it saves variance; the
  calibration test measured it liberal); with fewer training seeds than the random subsets,
  the training noise it carries on top, s_w^2 (1/m - q_r), is added; s_w^2 is the pooled
  within-subset variance of every subset in play with more than one training seed.
The difference's variance is the sum of both arms' terms; its df come from the
Welch-Satterthwaite formula over the mean squares it is made of (J_r - 1 when only s_r^2 is
used); the interval uses Student-t quantiles at those df, and the smallest detectable
difference is the true difference the same t test finds with 80% power (noncentral t), so
both use one standard error and one df.

All functions take replicate means as NaN-padded arrays [..., subsets, seeds]; leading
dimensions are independent comparisons, so a calibration simulation runs the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

BETTER, WORSE, INSIDE_NOISE, NOT_ASSESSABLE = "better", "worse", "inside noise", "not assessable"
ALPHA, POWER = 0.05, 0.8


@dataclass(frozen=True)
class Comparison:
    """One method against one reference on one task."""

    difference: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    sd_method: float
    sd_reference: float
    sd_within: float
    n_subsets: int
    rank: int
    n_reference: int
    detectable: float
    verdict: str


@dataclass(frozen=True)
class Arm:
    """An arm's replicate means summarised for the variance model (arrays over the batch)."""

    mean: np.ndarray        # mean of subset means
    ms: np.ndarray          # between-subset mean square (variance of subset means)
    subsets: np.ndarray     # J
    inv_seeds: np.ndarray   # mean over subsets of 1 / m_j
    ss_within: np.ndarray   # sum of squared deviations from the subset means
    df_within: np.ndarray   # sum of (m_j - 1)


def arm(replicates: np.ndarray) -> Arm:
    """Summarise [..., subsets, seeds] replicate means (NaN: no such replicate)."""
    a = np.asarray(replicates, dtype=float)
    seeds = np.sum(~np.isnan(a), axis=-1)
    present = seeds > 0
    n_subsets = present.sum(axis=-1)
    if np.any(n_subsets < 1):
        raise ValueError("an arm has no replicates")
    subset_means = np.nansum(a, axis=-1) / np.maximum(seeds, 1)
    mean = np.sum(np.where(present, subset_means, 0.0), axis=-1) / n_subsets
    deviation = np.where(present, subset_means - mean[..., None], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ms = np.where(n_subsets > 1, np.sum(deviation**2, axis=-1) / (n_subsets - 1), np.nan)
    inv_seeds = np.sum(np.where(present, 1.0 / np.maximum(seeds, 1), 0.0), axis=-1) / n_subsets
    ss_within = np.nansum((a - subset_means[..., None]) ** 2, axis=(-1, -2))
    df_within = np.sum(np.maximum(seeds - 1, 0), axis=-1)
    return Arm(mean=mean, ms=ms, subsets=n_subsets, inv_seeds=inv_seeds, ss_within=ss_within,
               df_within=df_within)


def difference_noise(method: np.ndarray, reference: np.ndarray, *,
                     spread: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(method mean - reference mean, its standard error, its degrees of freedom).

    `spread`: the arm whose between-subset spread a one-subset arm borrows (default: the
    reference when it has several subsets, else the method). The standard error is NaN when
    no arm in play has two subsets (subset noise cannot be assessed)."""
    m, r = arm(method), arm(reference)
    s = arm(spread) if spread is not None else None
    sides = [m, r] + ([s] if s is not None else [])
    ss_w = sum(a.ss_within for a in sides)
    df_w = sum(a.df_within for a in sides)
    ms_w = np.where(df_w > 0, ss_w / np.maximum(df_w, 1), 0.0)
    if s is not None:
        source, src_q = 2, s.inv_seeds
    else:
        source = np.where(r.subsets > 1, 1, 0)
        src_q = np.where(r.subsets > 1, r.inv_seeds, m.inv_seeds)
    shape = np.broadcast(m.mean, r.mean).shape
    # the mean squares (method, reference, outside source, within) and their coefficients
    ms = np.stack(np.broadcast_arrays(m.ms, r.ms, s.ms if s is not None else np.nan, ms_w))
    dfs = np.stack(np.broadcast_arrays(m.subsets - 1, r.subsets - 1,
                                       s.subsets - 1 if s is not None else 0, df_w)).astype(float)
    coef = np.zeros((4, *shape))
    # both arms with several subsets: one pooled between-subset variance (exact t on
    # J_m + J_r - 2 df under the null); where the method's subsets have fewer training seeds
    # than the reference's, the training noise they have on top is added
    pooled = (m.subsets > 1) & (r.subsets > 1)
    pool_coef = (1.0 / m.subsets + 1.0 / r.subsets) / np.maximum(m.subsets + r.subsets - 2, 1)
    extra = np.where(pooled, np.maximum(m.inv_seeds - r.inv_seeds, 0.0) / m.subsets, 0.0)
    coef[3] += extra
    for k, side in enumerate((m, r)):
        own = side.subsets > 1
        coef[k] += np.where(own, np.where(pooled, pool_coef * (side.subsets - 1),
                                          1.0 / side.subsets), 0.0)
        for j in range(3):
            coef[j] += np.where(~own & (source == j), 1.0, 0.0)
        # fewer training seeds than the source's subsets: add the training noise they lack
        coef[3] += np.where(~own, np.maximum(side.inv_seeds - src_q, 0.0), 0.0)
    coef[3] = np.where(df_w > 0, coef[3], 0.0)
    terms = np.where(coef != 0, coef * np.nan_to_num(ms), 0.0)
    variance = terms.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.sum(np.where(coef != 0, terms**2 / np.maximum(dfs, 1), 0.0), axis=0)
        df = np.where(denominator > 0, variance**2 / denominator, np.inf)
    df = np.where(pooled & (extra == 0), m.subsets + r.subsets - 2, df)
    usable = np.all(np.where(coef != 0, np.isfinite(ms) & (dfs > 0), True), axis=0)
    se = np.where(usable & (coef[:3] != 0).any(axis=0), np.sqrt(variance), np.nan)
    return m.mean - r.mean, se, df


def interval(difference: np.ndarray, se: np.ndarray, df: np.ndarray,
             confidence: float = 1 - ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t interval (a point when the standard error is 0)."""
    half = sps.t.ppf(0.5 + confidence / 2, df) * se
    half = np.where(se == 0, 0.0, half)
    return difference - half, difference + half


def p_value(difference: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p value of the t statistic (0 for a nonzero difference with no noise)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(difference) / se
    p = 2 * sps.t.sf(t, df)
    return np.where(se == 0, np.where(difference == 0, 1.0, 0.0), p)


def power_at(effect: np.ndarray, se: np.ndarray, df: np.ndarray, *,
             alpha: float = ALPHA) -> np.ndarray:
    """Probability that the two-sided t test at `alpha` rejects when the true difference is
    `effect`: the noncentral t with noncentrality effect / se, integrated over the
    chi-square quantiles of the estimated variance (stable where scipy's nct is not)."""
    effect, se, df = np.broadcast_arrays(*(np.asarray(x, float) for x in (effect, se, df)))
    critical = sps.t.ppf(1 - alpha / 2, df)[..., None]
    shift = (np.abs(effect) / se)[..., None]
    grid = (np.arange(_QUADRATURE) + 0.5) / _QUADRATURE
    finite = np.isfinite(df)[..., None]
    dof = np.where(finite, df[..., None], 1.0)
    scale = np.where(finite, np.sqrt(sps.chi2.ppf(grid, dof) / dof), 1.0)
    z = critical * scale
    return np.mean(sps.norm.cdf(shift - z) + sps.norm.cdf(-shift - z), axis=-1)


_QUADRATURE = 400


def detectable_difference(se: np.ndarray, df: np.ndarray, *, alpha: float = ALPHA,
                          power: float = POWER) -> np.ndarray:
    """The smallest true difference the t test of the interval finds with probability
    `power` (infinite when the standard error is unknown)."""
    se, df = np.broadcast_arrays(np.asarray(se, float), np.asarray(df, float))
    low = np.zeros(se.shape)
    high = np.full(se.shape, 200.0)
    for _ in range(60):   # bisection on the noncentrality, vectorised
        mid = (low + high) / 2
        reached = power_at(mid, 1.0, df, alpha=alpha) >= power
        high, low = np.where(reached, mid, high), np.where(reached, low, mid)
    return np.where(np.isnan(se), np.inf, high * se)


def verdict(low: float, high: float, detectable: float, higher_is_better: bool) -> str:
    """One word for an interval of (method - reference): which side of zero it lies on."""
    if math.isinf(detectable) or math.isnan(low):
        return NOT_ASSESSABLE
    if low <= 0 <= high:
        return INSIDE_NOISE
    return BETTER if (low > 0) == higher_is_better else WORSE


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p values (family-wise error control), in input order."""
    order = np.argsort(p_values, kind="stable")
    n = len(p_values)
    adjusted, running = [0.0] * n, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def family_verdict(difference: float, adjusted_p: float, higher_is_better: bool, *,
                   alpha: float = ALPHA) -> str:
    """The verdict word under a family-wise adjusted p value."""
    if math.isnan(adjusted_p):
        return NOT_ASSESSABLE
    if adjusted_p >= alpha:
        return INSIDE_NOISE
    return BETTER if (difference > 0) == higher_is_better else WORSE


def _as_matrix(replicates: list[dict[str, float]], items: list[str]) -> np.ndarray:
    return np.array([[rep[i] for i in items] for rep in replicates], dtype=float)


def common_items(*sides: list[list[dict[str, float]]]) -> list[str]:
    """Items scored in every replicate of every side (paired comparisons need the same items)."""
    sets = [set(rep) for side in sides for subset in side for rep in subset]
    if not sets:
        raise ValueError("no replicates to compare")
    items = sorted(set.intersection(*sets))
    if not items:
        raise ValueError("the replicates share no evaluation items")
    return items


def subset_means(subsets: list[list[dict[str, float]]], items: list[str]) -> np.ndarray:
    """[subsets, seeds] replicate means over `items`, NaN-padded for unequal seed counts."""
    width = max(len(s) for s in subsets)
    table = np.full((len(subsets), width), np.nan)
    for j, subset in enumerate(subsets):
        table[j, :len(subset)] = _as_matrix(subset, items).mean(axis=1)
    return table


def between_seed_sd(means: np.ndarray) -> float:
    """Sample standard deviation of replicate means; NaN with fewer than two replicates."""
    return float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")


def rank_among(value: float, reference_means: np.ndarray, higher_is_better: bool) -> int:
    """1 = better than every reference subset; ties count in the method's favour."""
    better = reference_means > value if higher_is_better else reference_means < value
    return 1 + int(np.sum(better))


def compare(method: list[list[dict[str, float]]], reference: list[list[dict[str, float]]], *,
            higher_is_better: bool, spread: list[list[dict[str, float]]] | None = None,
            alpha: float = ALPHA, power: float = POWER) -> Comparison:
    """Every statistic the report shows for one method against one reference. Each side is
    a list of subsets (selection seeds), each a list of replicates (training seeds) mapping
    item id -> value; `spread`: the random subsets, when neither side is them."""
    items = common_items(method, reference, *([spread] if spread else []))
    a, b = subset_means(method, items), subset_means(reference, items)
    c = subset_means(spread, items) if spread else None
    diff, se, df = (float(x) for x in difference_noise(a, b, spread=c))
    low, high = (float(x) for x in interval(diff, se, df, 1 - alpha))
    detectable = float(detectable_difference(se, df, alpha=alpha, power=power))
    ma, mb = arm(a), arm(b)
    df_w = int(ma.df_within + mb.df_within)
    sd_w = math.sqrt(float(ma.ss_within + mb.ss_within) / df_w) if df_w else float("nan")
    return Comparison(difference=diff, low=low, high=high, se=se, df=df,
                      p_value=float(p_value(diff, se, df)),
                      sd_method=math.sqrt(float(ma.ms)) if ma.subsets > 1 else float("nan"),
                      sd_reference=math.sqrt(float(mb.ms)) if mb.subsets > 1 else float("nan"),
                      sd_within=sd_w, n_subsets=int(ma.subsets),
                      rank=rank_among(float(ma.mean), np.nanmean(b, axis=1), higher_is_better),
                      n_reference=int(mb.subsets), detectable=detectable,
                      verdict=verdict(low, high, detectable, higher_is_better))


def design_noise(sd_between: float, sd_within: float, *, method_subsets: int,
                 method_seeds: int, reference_subsets: int, reference_seeds: int,
                 ) -> tuple[float, float]:
    """(standard error, df) a design gives in expectation: the estimator of
    `difference_noise` with every mean square at its expected value (for planning, and
    for the power a run promises)."""
    def expected(subsets: int, seeds: int) -> np.ndarray:
        one = np.sqrt(sd_between**2 + sd_within**2 / seeds)   # a subset mean's spread
        table = np.full((subsets, seeds), np.nan)
        if subsets > 1:   # subset means at exactly the expected mean square
            z = np.arange(subsets) - (subsets - 1) / 2
            table[:, 0] = one * z / np.sqrt(np.sum(z**2) / (subsets - 1))
        else:
            table[:, 0] = 0.0
        if seeds > 1:     # seeds with exactly the expected within-subset variance
            z = np.arange(seeds) - (seeds - 1) / 2
            offsets = sd_within * z / np.sqrt(np.sum(z**2) / (seeds - 1))
            table = table[:, :1] + offsets[None, :]
        return table
    _, se, df = difference_noise(expected(method_subsets, method_seeds),
                                 expected(reference_subsets, reference_seeds))
    return float(se), float(df)
