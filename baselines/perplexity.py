"""Perplexity: the base model's mean response-token loss (log-perplexity) per candidate.

`prefer: low` (default) keeps the responses the model finds most natural (easy, clean data);
`prefer: high` keeps the most surprising ones (hard or noisy data)."""

from __future__ import annotations

import numpy as np

from baselines._common import pool_losses
from naitbench.select.protocol import SelectionContext, Selector


class PerplexitySelector(Selector):
    """Score = -loss(response | prompt) for prefer=low, +loss for prefer=high."""

    def __init__(self, name: str, prefer: str = "low", max_length: int = 512,
                 batch_size: int = 8, **kwargs):
        super().__init__(name, **kwargs)
        if prefer not in ("low", "high"):
            raise ValueError(f"perplexity prefer={prefer!r}: use low or high")
        self.prefer, self.max_length, self.batch_size = prefer, max_length, batch_size

    def score(self, ctx: SelectionContext) -> np.ndarray:
        loss = pool_losses(ctx, ctx.model_dir, True, max_length=self.max_length,
                           batch_size=self.batch_size)
        return loss if self.prefer == "high" else -loss
