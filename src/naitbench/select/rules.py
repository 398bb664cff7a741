"""Selection rules: a [candidates, target samples] similarity matrix -> one score per
candidate, whose descending order is the rule's ranking (the shared top-ratio cut takes the
subset). Every rule ranks the whole pool, so its subsets are nested across budgets, as in the
code of "A Critical Look at Targeted Instruction Selection" (arXiv 2602.14696, dcml-lab/
targeted-instruction-selection, `selection/`); docs/baselines.md gives each definition.

- `max`, `mean`: each candidate's best or mean similarity over the target samples.
- `doubly_greedy`: the Critical Look code's doubly-greedy, which ranks by each candidate's
  maximum similarity over target samples: the same ranking as `max`, kept as a name.
- `subtask_max_mean`: mean within each group of target samples, max over groups (LESS's).
- `round_robin`: target samples take turns picking their most similar unpicked candidate
  (RDS+, Critical Look).
- `uot`: unbalanced optimal transport from the target samples to the candidates (POT's
  `sinkhorn_unbalanced`, cost (1 - S) / 2, KL relaxation, uniform marginals); a candidate's
  score is the mass it receives.
- `knn_uniform`, `knn_kde`: TSDS (Liu et al., 2024) as Critical Look runs it: probability
  mass from each target sample over its nearest candidates, uniform over one common K, or
  water-filled with weights 1 / KDE density so that near-duplicates share their mass
  (neighbour search with scikit-learn); candidates ranked by their probability.

Rules that produce an order (`round_robin`, `knn_uniform`, `knn_kde`) break ties by the lower
pool index; the others leave ties to the shared ranking (rounded score, then id). `uot`,
`knn_uniform` and `knn_kde` read similarities as cosines: a matrix outside [-1, 1] is refused.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from naitbench.errors import ConfigError
from naitbench.select.aggregate import rank_scores


@dataclass(frozen=True)
class Rule:
    """A rule's function, its parameters' defaults and what else it needs."""

    function: Callable[..., np.ndarray]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: reads S as a cosine in [-1, 1]
    cosine: bool = False
    #: needs candidate vectors whose dot products are candidate-to-candidate similarities
    vectors: bool = False
    #: needs the group (subtask) of every target sample
    groups: bool = False


def _max(similarity: np.ndarray) -> np.ndarray:
    return similarity.max(axis=1)


def _mean(similarity: np.ndarray) -> np.ndarray:
    return similarity.mean(axis=1)


def _subtask_max_mean(similarity: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    labels = sorted(set(groups))
    columns = np.asarray(groups)
    means = [similarity[:, columns == label].mean(axis=1) for label in labels]
    return np.max(means, axis=0)


def round_robin(similarity: np.ndarray, budget: int) -> list[int]:
    """Candidate indices in picking order: column j (a target sample) picks its most similar
    remaining candidate on its turn; ties go to the lower index."""
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


def _round_robin(similarity: np.ndarray) -> np.ndarray:
    return rank_scores(round_robin(similarity, len(similarity)), len(similarity))


def _uot(similarity: np.ndarray, eps: float, reg_m_target: float,
         reg_m_candidate: float) -> np.ndarray:
    import ot

    cost = (1.0 - similarity.T) / 2.0                       # [targets, candidates]
    m, n = cost.shape
    plan = ot.unbalanced.sinkhorn_unbalanced(np.full(m, 1.0 / m), np.full(n, 1.0 / n), cost,
                                             reg=eps, reg_m=(reg_m_target, reg_m_candidate),
                                             reg_type="kl")
    if not np.isfinite(plan).all():
        raise FloatingPointError(f"uot: the transport plan is not finite (eps={eps} too small "
                                 f"for these similarities?)")
    return plan.sum(axis=0)


def _by_probability(probability: np.ndarray) -> np.ndarray:
    """Scores ranking by probability (descending), ties to the lower index."""
    order = np.lexsort((np.arange(len(probability)), -probability))
    return rank_scores(order, len(probability))


def _nearest(similarity: np.ndarray, prefetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per target sample, its `prefetch` nearest candidates by distance max(1 - S, 0):
    distances [m, prefetch] ascending and indices (ties to the lower index)."""
    distance = np.maximum(1.0 - similarity.T, 0.0)
    order = np.argsort(distance, axis=1, kind="stable")[:, :prefetch]
    return np.take_along_axis(distance, order, axis=1), order


def _knn_uniform(similarity: np.ndarray, alpha: float, c: float, prefetch: int) -> np.ndarray:
    n, m = similarity.shape
    distance, index = _nearest(similarity, min(prefetch, n))
    limit = distance.shape[1]
    k = 1
    # grow the common neighbourhood size K while the transport cost it saves is below the
    # diversity term: (alpha / C) * sum_i sum_{k<K} (d_iK - d_ik) < (1 - alpha) * m
    while k < limit:
        gap = float((distance[:, k:k + 1] - distance[:, :k]).sum())
        if alpha / c * gap >= (1.0 - alpha) * m:
            break
        k += 1
    if k == limit == n:
        raise ValueError(f"knn_uniform: at alpha={alpha} the common neighbourhood grew to the "
                         f"whole pool of {n}, so every candidate is equally likely and the "
                         f"ranking would be pool order; raise alpha (rule_params.alpha)")
    probability = np.zeros(n)
    np.add.at(probability, index[:, :k].ravel(), 1.0 / (k * m))
    return _by_probability(probability)


def kde_density(vectors: np.ndarray, rows: np.ndarray, neighbours: int,
                bandwidth: float) -> np.ndarray:
    """TSDS's density of each candidate in `rows`: the sum of the Epanechnikov kernel
    max(1 - 2 d / sigma^2, 0), d = max(1 - cosine, 0) (on unit vectors 2 d is the squared
    distance), over its `neighbours` nearest candidates of the pool, itself included."""
    from sklearn.neighbors import NearestNeighbors

    if bandwidth == 0:
        return np.ones(len(rows))
    search = NearestNeighbors(n_neighbors=min(neighbours, len(vectors)), metric="cosine",
                              algorithm="brute").fit(vectors)
    distance, _ = search.kneighbors(vectors[rows])
    kernel = np.maximum(1.0 - 2.0 * np.maximum(distance, 0.0) / bandwidth**2, 0.0)
    return kernel.sum(axis=1)


def _knn_kde(similarity: np.ndarray, vectors: Callable[[], np.ndarray], alpha: float,
             c: float, bandwidth: float, prefetch: int, kde_neighbours: int) -> np.ndarray:
    n, m = similarity.shape
    distance, index = _nearest(similarity, max(2, min(prefetch, n // 10, n)))
    limit = distance.shape[1]
    unique, inverse = np.unique(index, return_inverse=True)
    density = kde_density(np.asarray(vectors(), dtype=np.float64), unique,
                          max(1, min(kde_neighbours, n // 10)), bandwidth)
    kde = density[inverse.reshape(index.shape)]
    # water-filling: each target sample's mass goes to its nearest candidates in proportion
    # to 1 / density, the neighbourhood of the sample with the lowest level grows first,
    # until the transport cost term outweighs the diversity term
    heap = [(1.0 / kde[j, 0], 0, j) for j in range(m)]
    heapq.heapify(heap)
    weighted = distance[:, 0] / kde[:, 0]
    cost = np.zeros(m)
    last = np.zeros(m, dtype=int)
    level = heap[0][0]
    while heap:
        level, k, j = heapq.heappop(heap)
        new_cost = distance[j, min(k + 1, limit - 1)] * level - weighted[j]
        if alpha / c * (cost.sum() - cost[j] + new_cost) >= (1.0 - alpha) * m:
            break
        cost[j] = new_cost
        last[j] = k
        if k < limit - 2:
            heapq.heappush(heap, (level + 1.0 / kde[j, k + 1], k + 1, j))
            weighted[j] += distance[j, k + 1] / kde[j, k + 1]
    probability = np.zeros(n)
    for j in range(m):
        share = 1.0 / (m * level * kde[j, :last[j] + 1])
        np.add.at(probability, index[j, :last[j] + 1], share)
        if last[j] + 1 < limit:
            probability[index[j, last[j] + 1]] += max(1.0 / m - share.sum(), 0.0)
    return _by_probability(probability)


RULES: dict[str, Rule] = {
    "max": Rule(_max),
    "mean": Rule(_mean),
    "doubly_greedy": Rule(_max),
    "subtask_max_mean": Rule(_subtask_max_mean, groups=True),
    "round_robin": Rule(_round_robin),
    "uot": Rule(_uot, {"eps": 0.01, "reg_m_target": float("inf"), "reg_m_candidate": 1e-4},
                cosine=True),
    # alpha: TSDS's default (Critical Look ran 0.01 on 197K candidates; on a pool of a few
    # thousand that grows every neighbourhood to the whole pool)
    "knn_uniform": Rule(_knn_uniform, {"alpha": 0.5, "c": 5.0, "prefetch": 5000},
                        cosine=True),
    "knn_kde": Rule(_knn_kde, {"alpha": 0.5, "c": 5.0, "bandwidth": 0.75, "prefetch": 5000,
                               "kde_neighbours": 1000}, cosine=True, vectors=True),
}

#: rules whose ranking is another rule's (the grid shows one row for them)
ALIASES = {"doubly_greedy": "max"}


def check_rule(rule: str, params: Mapping[str, Any] | None = None) -> Rule:
    """The rule called `rule`, its parameter names checked; a ConfigError names what would be
    accepted."""
    if rule not in RULES:
        raise ConfigError(f"rule={rule!r}: use one of {sorted(RULES)}")
    spec = RULES[rule]
    unknown = sorted(set(params or {}) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"rule_params {unknown} are not parameters of rule {rule!r} "
                          f"(it takes {sorted(spec.defaults) or 'none'})")
    return spec


def apply_rule(similarity: np.ndarray, rule: str, *, groups: Sequence[str] | None = None,
               vectors: Callable[[], np.ndarray] | None = None,
               params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Scores of the candidates (rows of `similarity`) under `rule`; `groups` labels each
    column (target sample), `vectors` gives candidate vectors for `knn_kde`."""
    spec = check_rule(rule, params)
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or 0 in similarity.shape:
        raise ValueError(f"rule {rule}: similarity must be a non-empty [candidates, target "
                         f"samples] matrix, got shape {similarity.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError(f"rule {rule}: the similarity matrix has non-finite values")
    if spec.cosine and (similarity.min() < -1 - 1e-6 or similarity.max() > 1 + 1e-6):
        raise ValueError(f"rule {rule} reads similarities as cosines in [-1, 1]; this "
                         f"representation's range is [{similarity.min():.4g}, "
                         f"{similarity.max():.4g}]")
    kwargs: dict[str, Any] = {**spec.defaults, **(params or {})}
    if spec.groups:
        if groups is None or len(groups) != similarity.shape[1]:
            raise ValueError(f"rule {rule} needs a group label for each of the "
                             f"{similarity.shape[1]} target samples")
        kwargs["groups"] = groups
    if spec.vectors:
        if vectors is None:
            raise ValueError(f"rule {rule} needs candidate-to-candidate similarities, which "
                             f"this representation does not define")
        kwargs["vectors"] = vectors
    return spec.function(np.clip(similarity, -1.0, 1.0) if spec.cosine else similarity,
                         **kwargs)
