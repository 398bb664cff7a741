"""Per-sample response loss under a causal LM, batched: the one place perplexity, IFD (and
any other loss-based baseline) compute it.

A sample is (prompt, response), encoded exactly as training encodes it
(naitbench.train.data.encode: response tokens and the eos carry the loss). The score of a
sample is the mean next-token cross-entropy over its loss-carrying tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from naitbench.train.data import IGNORE_INDEX, collate, encode


@torch.no_grad()
def response_losses(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *,
                    max_length: int, batch_size: int, desc: str = "response loss",
                    autocast: AbstractContextManager | None = None) -> tuple[np.ndarray, int]:
    """Mean response-token loss of each (prompt, response) pair, and the forward tokens used.
    The forward runs under `autocast` when given (the loss itself is taken in fp32).

    Sequences are truncated on the right to `max_length`; a pair left with no scored token
    (after the shift) raises, as its loss would be undefined.
    """
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size={batch_size} and max_length={max_length} must be >= 1, >= 2")
    encoded = [{k: v[:max_length] for k, v in encode(tokenizer, p, r).items()} for p, r in pairs]
    # longest first, so batches hold similar lengths (less padding); results go back in order
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    losses = np.zeros(len(encoded), dtype=np.float64)
    device = next(model.parameters()).device
    tokens = 0
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in
                 collate([encoded[i] for i in rows], tokenizer.pad_token_id).items()}
        with autocast or contextlib.nullcontext():
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        counts = (labels != IGNORE_INDEX).sum(1)
        if (counts == 0).any():
            bad = [rows[j] for j in torch.nonzero(counts == 0).flatten().tolist()]
            raise ValueError(f"samples {bad[:5]} keep no response token within "
                             f"max_length={max_length}")
        losses[rows] = (token_loss.sum(1) / counts).double().cpu().numpy()
        tokens += int(batch["attention_mask"].sum())
    return losses, tokens
