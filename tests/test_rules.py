"""Selection rules (naitbench.select.rules): planted signal that random picking would miss,
and the edge cases (ties, a budget larger than the planted cluster, one target sample)."""

from __future__ import annotations

import numpy as np
import pytest

from naitbench.config import ConfigError
from naitbench.select.rules import ALIASES, RULES, apply_rule, kde_density


def clustered(n_per: int = 30, clusters: int = 3, dim: int = 16, noise: float = 0.15,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around orthogonal centres (axis i for cluster i) and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), n_per)
    points = np.eye(dim)[labels] + noise * rng.standard_normal((len(labels), dim))
    return points / np.linalg.norm(points, axis=1, keepdims=True), labels


def near(cluster: int, m: int, dim: int = 16, noise: float = 0.15, seed: int = 1):
    rng = np.random.default_rng(seed)
    points = np.eye(dim)[[cluster] * m] + noise * rng.standard_normal((m, dim))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """The first k under the shared ranking (ties to the lower index here: ids are ordered)."""
    return np.lexsort((np.arange(len(scores)), -np.round(scores, 12)))[:k]


def scores_of(rule: str, similarity: np.ndarray, vectors: np.ndarray | None = None,
              groups=None, **params) -> np.ndarray:
    return apply_rule(similarity, rule, groups=groups,
                      vectors=None if vectors is None else (lambda: vectors),
                      params=params)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_picks_the_planted_cluster(rule):
    pool, labels = clustered()
    target = near(0, 5)
    groups = ["t/a", "t/a", "t/b", "t/b", "t/b"]
    scores = scores_of(rule, pool @ target.T, pool, groups)
    kept = top(scores, 20)
    # random picking keeps a third of the budget from cluster 0 (P(all 20) ~ 1e-11)
    assert (labels[kept] == 0).all(), (rule, labels[kept])


def test_round_robin_balances_target_samples_where_max_follows_the_closest():
    pool, labels = clustered(noise=0.1)
    sim = pool @ np.stack([near(0, 1, noise=0.0)[0], near(1, 1, noise=0.0)[0]]).T
    sim[:, 1] *= 0.5                # sample 2's cluster is less similar to it than 0's to 1
    robin = labels[top(apply_rule(sim, "round_robin"), 20)]
    greedy = labels[top(apply_rule(sim, "max"), 20)]
    assert (robin == 0).sum() == 10 and (robin == 1).sum() == 10
    assert (greedy == 0).all()


def test_knn_kde_spreads_mass_away_from_near_duplicates():
    pool, labels = clustered(n_per=100, noise=0.3)
    pool = np.concatenate([np.repeat(near(0, 1, noise=0.01, seed=9), 12, axis=0), pool])
    duplicate = np.arange(len(pool)) < 12
    sim = pool @ near(0, 5, noise=0.3).T
    kde = top(scores_of("knn_kde", sim, pool), 15)
    flat = top(scores_of("knn_kde", sim, pool, bandwidth=0.0), 15)   # sigma 0: no density
    assert duplicate[top(apply_rule(sim, "max"), 15)].sum() == 12    # nearest to the target
    assert duplicate[flat].sum() == 12
    assert duplicate[kde].sum() < 6                                  # ... spread instead
    assert (labels[kde[~duplicate[kde]] - 12] == 0).sum() >= 10      # over the target's cluster
    density = kde_density(pool, np.arange(len(pool)), 20, 0.75)
    assert density[duplicate].min() > density[~duplicate].max()     # duplicates are dense


def test_uot_mass_is_the_target_marginal_and_follows_similarity():
    pool, labels = clustered()
    sim = pool @ near(0, 4).T
    mass = apply_rule(sim, "uot")
    np.testing.assert_allclose(mass.sum(), 1.0, rtol=1e-3)   # every target sample ships 1/m
    assert mass[labels == 0].min() > mass[labels != 0].max()


def test_ties_go_to_the_lower_index_in_ordered_rules():
    sim = np.full((6, 2), 0.5)
    for rule in ("round_robin", "knn_kde"):
        scores = scores_of(rule, sim, np.eye(6))
        assert list(np.argsort(-scores, kind="stable")) == list(range(6)), rule
    # one target sample: K stops at 5 of 6 (distance gaps 5.9 >= 5 at alpha 0.5, C 5), the
    # five nearest equally likely, ranked by index, the farthest last
    column = np.array([[0.9], [0.9], [0.1], [0.0], [-0.5], [-0.9]])
    scores = apply_rule(column, "knn_uniform")
    assert list(np.argsort(-scores, kind="stable")) == list(range(6))
    assert len(set(np.round(scores[:5], 12))) == 5 and scores[5] < scores[4]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_budget_past_the_cluster_and_one_target_sample(rule):
    pool, labels = clustered(n_per=10)
    sim = pool @ near(0, 1).T                     # one target sample
    scores = scores_of(rule, sim, pool, ["t/a"])
    order = top(scores, len(pool))
    assert sorted(order) == list(range(len(pool)))          # a ranking of the whole pool
    assert (labels[order[:10]] == 0).all()                  # the cluster first ...
    assert len(set(order[:25])) == 25                       # ... then the rest, no repeats


def test_aliases_rank_as_their_rule():
    pool, _ = clustered()
    sim = pool @ near(0, 3).T
    for alias, rule in ALIASES.items():
        np.testing.assert_array_equal(apply_rule(sim, alias), apply_rule(sim, rule))


def test_bad_rules_and_matrices_are_refused_with_what_is_accepted():
    sim = np.array([[0.2, 0.4], [0.1, 0.9]])
    with pytest.raises(ConfigError, match=r"rule='median': use one of \[.*'uot'"):
        apply_rule(sim, "median")
    with pytest.raises(ConfigError, match=r"\['sigma'\] are not parameters of rule 'uot' "
                                          r"\(it takes \['eps'"):
        apply_rule(sim, "uot", params={"sigma": 1.0})
    with pytest.raises(ValueError, match=r"cosines in \[-1, 1\]; this representation's range "
                                         r"is \[0.1, 3.06\]"):
        apply_rule(sim * [[1.0, 1.0], [1.0, 3.4]], "knn_uniform")
    with pytest.raises(ValueError, match="needs a group label for each of the 2"):
        apply_rule(sim, "subtask_max_mean", groups=["a"])
    with pytest.raises(ValueError, match="needs candidate-to-candidate similarities"):
        apply_rule(sim, "knn_kde")
    with pytest.raises(ValueError, match="non-finite"):
        apply_rule(np.array([[np.nan]]), "max")


def test_knn_uniform_refuses_a_neighbourhood_of_the_whole_pool():
    """At Critical Look's alpha (0.01, tuned for 197K candidates) K grows until the distance
    gaps sum to 495 per target sample: on 90 candidates every one is in every neighbourhood,
    every probability is equal, and the rule says so instead of returning pool order."""
    pool, _ = clustered()
    with pytest.raises(ValueError, match=r"grew to the whole pool of 90.*raise alpha"):
        apply_rule(pool @ near(0, 3).T, "knn_uniform", params={"alpha": 0.01})
