"""NAIT's neuron feature library: per layer, oriented PCA directions of a target's activations.

For layer l with pool activations X (n x d) and target activations T (m x d):
  mu_l = mean of X (the pool mean);   C = T - mu_l   (target samples centred on the pool mean)
  C = U S V^T (SVD); directions v_1..v_k = the top-k right singular vectors;
  explained variance ratio e_i = s_i^2 / sum_j s_j^2;  weights w_i = e_i / sum_{j<=k} e_j;
  each v_i is negated if mean(C) . v_i < 0, so the target mean projects positively.
Candidate score: (1/|L|) sum_l sum_i w_i cos(x - mu_l, v_i).
The library (mu, V, w per layer) is saved and can score any pool (centred on that pool's mean
by default, or on the stored mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class FeatureLibrary:
    """Directions [layers, k, d], weights [layers, k], pool means [layers, d] and the layers."""

    layers: list[int]
    directions: np.ndarray
    weights: np.ndarray
    pool_mean: np.ndarray
    explained: np.ndarray

    def save(self, path: str | Path) -> Path:
        from naitbench.io import atomic_open

        with atomic_open(path, "wb") as handle:
            np.savez(handle, layers=np.array(self.layers), directions=self.directions,
                     weights=self.weights, pool_mean=self.pool_mean, explained=self.explained)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureLibrary:
        data = np.load(path)
        return cls(layers=[int(x) for x in data["layers"]], directions=data["directions"],
                   weights=data["weights"], pool_mean=data["pool_mean"],
                   explained=data["explained"])


def build_library(pool: np.ndarray, target: np.ndarray, layers: Sequence[int],
                  k: int) -> FeatureLibrary:
    """pool [n, L, d] and target [m, L, d] activations of `layers` -> the library."""
    if pool.shape[1:] != target.shape[1:] or pool.shape[1] != len(layers):
        raise ValueError(f"pool {pool.shape} and target {target.shape} features do not match "
                         f"the {len(layers)} layers")
    k = min(k, target.shape[0], target.shape[2])
    directions, weights, means, explained = [], [], [], []
    for layer in range(len(layers)):
        mean = pool[:, layer].astype(np.float64).mean(axis=0)
        centred = target[:, layer].astype(np.float64) - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        ratio = singular**2 / np.sum(singular**2)
        top = vt[:k].copy()
        signs = np.sign(top @ centred.mean(axis=0))
        top *= np.where(signs == 0, 1.0, signs)[:, None]
        directions.append(top)
        weights.append(ratio[:k] / ratio[:k].sum())
        means.append(mean)
        explained.append(ratio[:k])
    return FeatureLibrary(layers=list(layers), directions=np.stack(directions),
                          weights=np.stack(weights), pool_mean=np.stack(means),
                          explained=np.stack(explained))


def score_pool(library: FeatureLibrary, pool: np.ndarray, centre: str = "pool") -> np.ndarray:
    """Explained-variance-weighted cosine alignment of each candidate, averaged over layers."""
    if centre not in ("pool", "library"):
        raise ValueError(f"centre={centre!r}: use pool (this pool's mean) or library")
    per_layer = []
    for layer in range(len(library.layers)):
        x = pool[:, layer].astype(np.float64)
        mean = x.mean(axis=0) if centre == "pool" else library.pool_mean[layer]
        centred = x - mean
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        cosines = (centred / np.maximum(norms, 1e-12)) @ library.directions[layer].T
        per_layer.append(cosines @ library.weights[layer])
    return np.mean(per_layer, axis=0)
