"""Instruction-Following Difficulty (Li et al., 'From Quantity to Quality'):
IFD = loss(response | prompt) / loss(response alone), both mean response-token losses of the
base model. High IFD: the instruction helps little to predict the response, i.e. a hard,
informative sample; keep high."""

from __future__ import annotations

import numpy as np

from baselines._common import pool_losses
from naitbench.select.protocol import SelectionContext, Selector


def ifd_scores(conditioned: np.ndarray, alone: np.ndarray) -> np.ndarray:
    """Elementwise ratio; a zero unconditioned loss (never seen in practice) raises."""
    if (alone <= 0).any():
        raise ValueError("a response has zero loss on its own: IFD is undefined")
    return conditioned / alone


class IFDSelector(Selector):
    """Score = IFD; `drop_above_one` ranks IFD > 1 (prompt hurts) last, as the paper filters."""

    def __init__(self, name: str, max_length: int = 512, batch_size: int = 8,
                 drop_above_one: bool = True, **kwargs):
        super().__init__(name, **kwargs)
        self.max_length, self.batch_size = max_length, batch_size
        self.drop_above_one = drop_above_one

    def score(self, ctx: SelectionContext) -> np.ndarray:
        kw = {"max_length": self.max_length, "batch_size": self.batch_size}
        ifd = ifd_scores(pool_losses(ctx, ctx.model_dir, True, **kw),
                         pool_losses(ctx, ctx.model_dir, False, **kw))
        if self.drop_above_one:
            ifd = np.where(ifd > 1.0, -ifd, ifd)
        return ifd
