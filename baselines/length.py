"""Response length: keep the longest responses (a strong, free reference, as in 'Long Is More
for Alignment'). Score = n_response_tokens of the pool record (no model pass)."""

from __future__ import annotations

import numpy as np

from naitbench.select.protocol import SelectionContext, Selector


class LengthSelector(Selector):
    """Score = the candidate's number of response tokens (prepare_data counted them)."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        missing = [r["id"] for r in ctx.pool if "n_response_tokens" not in r]
        if missing:
            raise KeyError(f"pool records lack n_response_tokens (e.g. {missing[:3]}): "
                           f"rerun prepare_data")
        return np.array([r["n_response_tokens"] for r in ctx.pool], dtype=np.float64)
