"""The NAIT selector on the shared protocol: libraries per target, z-score mean across targets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from naitbench.config import check_layers
from naitbench.features.capture import Spec
from naitbench.nait.library import build_library, score_pool
from naitbench.select.aggregate import zscore_mean
from naitbench.select.protocol import SelectionContext, Selector


def resolve_layers(layers: Sequence[int | float], n_layers: int) -> list[int]:
    """Integers are layer indices; floats in [0, 1) are fractions of the depth."""
    resolved = []
    for layer in layers:
        if isinstance(layer, float) and 0 <= layer < 1:
            layer = int(layer * n_layers)
        resolved.append(layer)
    return sorted(set(check_layers(resolved, n_layers)))


class NAITSelector(Selector):
    """Rank candidates by alignment with the target's activation features."""

    targeted = True

    def __init__(self, name: str = "nait", site: str = "mlp", pooling: str = "mean",
                 layers: Sequence[int | float] = (0.5, 0.625, 0.75, 0.875), k: int = 4,
                 centre: str = "pool", **kwargs):
        super().__init__(name, **kwargs)
        self.spec, self.layers, self.k, self.centre = Spec(site, pooling), list(layers), k, centre

    def score(self, ctx: SelectionContext) -> np.ndarray:
        pool_store = ctx.store("pool")
        layers = resolve_layers(self.layers, pool_store.n_layers(self.spec))
        pool = pool_store.load(self.spec, layers)
        per_target = []
        for target in ctx.targets:
            library = build_library(pool, ctx.features(target, self.spec, layers), layers,
                                    self.k)
            library.save(ctx.artefact_dir(ctx.cfg.select.name) / f"{target}.npz")
            per_target.append(score_pool(library, pool, self.centre))
        return zscore_mean(per_target) if len(per_target) > 1 else per_target[0]
