"""Random selection: the reference every method must beat; each seed is one subset draw."""

from __future__ import annotations

import numpy as np

from naitbench.select.protocol import SelectionContext, Selector


class RandomSelector(Selector):
    """Uniform random scores from the configured seed."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        return np.random.default_rng(ctx.seed).random(len(ctx.pool))
