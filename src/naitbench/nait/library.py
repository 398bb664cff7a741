"""NAIT's neuron feature library: per layer, oriented principal directions of a target's
activation features, and the alignment score of pool candidates (docs/nait.md).

For layer l with target features T (m x d) and pool features X (n x d):
  offset o_l = 0 (`centre: self`) or the pool mean (`pool`, `library`);  R = T - o_l
  basis: R - mean(R) (`self`: PCA, centred on the target's own mean) or R itself (`pool`)
  = U S V^T;  directions v_1..v_k = the top-k right singular vectors;
  explained variance ratio e_i = s_i^2 / sum_j s_j^2;  weights w_i = e_i / sum_{j<=k} e_j;
  each v_i is negated if mean(R) . v_i < 0 (the published sign rule: with `self` this is
  mean_i dA(P_i) . v < 0).
Score of candidate x: sum over layers of sum_i w_i p_i, where p_i = (x - o_l) . v_i (`dot`) or
the cosine of (x - o_l) and v_i (`cosine`); with `rest: absolute` directions 2..k enter as
|p_i|, so their sign (which the target mean does not fix, see docs/nait.md) cannot matter.
With the published defaults (centre self, k=1, dot) this is s(y) = sum_l dA_l(y) . v_l.
The library (directions, weights, offsets per layer) is saved and can score any pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

CENTRES = ("self", "pool", "library")
SCORINGS = ("dot", "cosine")
RESTS = ("signed", "absolute")


@dataclass
class FeatureLibrary:
    """Directions [layers, k, d], weights [layers, k], offsets [layers, d] (the vector taken
    from target rows before the decomposition: zeros, or the building pool's mean)."""

    layers: list[int]
    directions: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    explained: np.ndarray
    centre: str

    def save(self, path: str | Path) -> Path:
        from naitbench.io import atomic_open

        with atomic_open(path, "wb") as handle:
            np.savez(handle, layers=np.array(self.layers), directions=self.directions,
                     weights=self.weights, offset=self.offset, explained=self.explained,
                     centre=np.array(self.centre))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureLibrary:
        data = np.load(path)
        return cls(layers=[int(x) for x in data["layers"]], directions=data["directions"],
                   weights=data["weights"], offset=data["offset"],
                   explained=data["explained"], centre=str(data["centre"]))


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"selector.{name}={value!r}: use one of {list(allowed)}")


def build_library(pool: np.ndarray, target: np.ndarray, layers: Sequence[int], k: int,
                  centre: str = "self") -> FeatureLibrary:
    """pool [n, L, d] and target [m, L, d] features of `layers` -> the library."""
    _check("centre", centre, CENTRES)
    if pool.shape[1:] != target.shape[1:] or pool.shape[1] != len(layers):
        raise ValueError(f"pool {pool.shape} and target {target.shape} features do not match "
                         f"the {len(layers)} layers")
    if k < 1:
        raise ValueError(f"selector.k={k}: at least one direction per layer")
    k = min(k, target.shape[0], target.shape[2])
    directions, weights, offsets, explained = [], [], [], []
    for layer in range(len(layers)):
        rows = target[:, layer].astype(np.float64)
        offset = (np.zeros(rows.shape[1]) if centre == "self"
                  else pool[:, layer].astype(np.float64).mean(axis=0))
        rows = rows - offset
        mean = rows.mean(axis=0)
        # one BLAS thread: a small SVD gains nothing from more, and OpenBLAS's spinning
        # threads made it about 70x slower where another process held the cores
        with threadpool_limits(limits=1, user_api="blas"):
            _, singular, vt = np.linalg.svd(rows - mean if centre == "self" else rows,
                                            full_matrices=False)
        ratio = singular**2 / max(float(np.sum(singular**2)), 1e-300)
        top = vt[:k].copy()
        signs = np.sign(top @ mean)
        top *= np.where(signs == 0, 1.0, signs)[:, None]
        directions.append(top)
        weights.append(ratio[:k] / max(float(ratio[:k].sum()), 1e-300))
        offsets.append(offset)
        explained.append(ratio[:k])
    return FeatureLibrary(layers=list(layers), directions=np.stack(directions),
                          weights=np.stack(weights), offset=np.stack(offsets),
                          explained=np.stack(explained), centre=centre)


def centred(library: FeatureLibrary, x: np.ndarray, layer: int, *,
            target: bool = False) -> np.ndarray:
    """Layer `layer` features [n, d] offset as the library's target rows were: target rows by
    the stored offset; candidates not at all (`self`), by their own pool's mean (`pool`) or
    by the stored mean (`library`, to score another pool)."""
    x = x.astype(np.float64)
    if target or library.centre == "library":
        return x - library.offset[layer]
    if library.centre == "pool":
        return x - x.mean(axis=0)
    return x


def project(library: FeatureLibrary, features: np.ndarray, *,
            target: bool = False) -> np.ndarray:
    """[n, layers, d] features -> [n, layers * k]: each layer's weighted projections on the
    library's directions (the terms NAIT's dot score sums)."""
    return np.concatenate([
        (centred(library, features[:, layer], layer, target=target)
         @ library.directions[layer].T) * library.weights[layer]
        for layer in range(len(library.layers))], axis=1)


def score_pool(library: FeatureLibrary, pool: np.ndarray, scoring: str = "dot",
               rest: str = "signed") -> np.ndarray:
    """Weighted alignment of each candidate with the library's directions, summed over its
    layers (candidates offset by `centred`)."""
    _check("scoring", scoring, SCORINGS)
    _check("rest", rest, RESTS)
    total = np.zeros(len(pool))
    for layer in range(len(library.layers)):
        x = centred(library, pool[:, layer], layer)
        projections = x @ library.directions[layer].T
        if scoring == "cosine":
            projections /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if rest == "absolute":
            projections[:, 1:] = np.abs(projections[:, 1:])
        total += projections @ library.weights[layer]
    return total
