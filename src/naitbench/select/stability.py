"""Stability of a targeted selector: how far its top subset moves when the in-domain samples
are resampled.

Each draw d = 1..N re-runs the selector on `SelectionContext.resampled(d)` (a bootstrap of
every target's in-domain set; draw numbers shared with selection seeds), keeps the top
`ratio` as selection does, and the figure is the mean Jaccard index |A & B| / |A | B| over
every pair of draws. 1 means the subset does not depend on which in-domain samples were
drawn; two independent random 10% subsets of a pool score about 0.05.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from itertools import combinations
from typing import Any

import numpy as np

from naitbench.select.subset import top_ratio


def jaccard(a: Collection, b: Collection) -> float:
    """|a & b| / |a | b| of two id collections (1.0 for two empty ones)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def top_ids(ids: Sequence[str], scores: np.ndarray, ratio: float) -> set[str]:
    """The ids selection keeps at `ratio` (same ranking and tie-break as the subset file)."""
    return {ids[i] for i in top_ratio(ids, scores, ratio)}


def mean_pairwise_jaccard(sets: Sequence[Collection]) -> dict[str, float]:
    """Mean, standard deviation and minimum of the Jaccard index over every pair of sets."""
    if len(sets) < 2:
        raise ValueError(f"stability needs at least two draws, got {len(sets)}")
    values = np.array([jaccard(a, b) for a, b in combinations(sets, 2)])
    return {"mean_jaccard": float(values.mean()), "sd_jaccard": float(values.std()),
            "min_jaccard": float(values.min())}


def draw_scores(selector: Any, ctx: Any, draws: int) -> list[np.ndarray]:
    """The selector's scores on bootstrap draws 1..`draws` of the in-domain sets (artefacts
    such as NAIT's library are not written for a draw)."""
    return [np.asarray(selector.score(replace(ctx.resampled(draw), save_artefacts=False)),
                       dtype=np.float64) for draw in range(1, draws + 1)]


def stability(selector: Any, ctx: Any, draws: int, ratio: float) -> dict[str, Any]:
    """The stability record a manifest carries: draws, ratio, pairwise Jaccard summary of
    the top `ratio` over the draws, and the wall time it took."""
    began = time.perf_counter()
    ids = [r["id"] for r in ctx.pool]
    sets = [top_ids(ids, scores, ratio) for scores in draw_scores(selector, ctx, draws)]
    return {"draws": int(draws), "ratio": float(ratio), **mean_pairwise_jaccard(sets),
            "wall_s": time.perf_counter() - began}
