"""Shared helpers of the loss-based baselines (perplexity, IFD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from naitbench.models.load import load_model, load_tokenizer
from naitbench.select.losses import response_losses
from naitbench.select.protocol import SelectionContext


def pool_losses(ctx: SelectionContext, model_dir: str | Path, with_prompt: bool, *,
                max_length: int, batch_size: int) -> np.ndarray:
    """Mean response-token loss of every pool candidate under the model in `model_dir`,
    conditioned on its prompt or not; forward tokens go to the context's cost ledger."""
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    pairs = [(r["prompt"] if with_prompt else "", r["response"]) for r in ctx.pool]
    losses, tokens = response_losses(model, tokenizer, pairs, max_length=max_length,
                                     batch_size=batch_size,
                                     autocast=ctx.autocast(next(model.parameters()).device),
                                     desc="loss | prompt" if with_prompt else "loss alone")
    ctx.add_cost(forward_tokens=tokens)
    return losses
