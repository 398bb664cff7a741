"""SelectIT-style self-reflection scoring (Liu et al., 2024), without generation.

- Token level: after a rating prompt, the next-token distribution restricted to the rating
  tokens "1".."K" (renormalised over them) gives an expected rating sum_k k * p(k).
- Sentence level: P distinct rating prompts give ratings s_1..s_P; the sentence score is
  mean(s) / (1 + alpha * std(s)) (population std), so prompt-sensitive ratings are damped.
- Model level: the sentence scores of several models are averaged with weights proportional
  to their parameter counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from naitbench.models.load import load_model, load_tokenizer
from naitbench.select.protocol import SelectionContext, Selector


def rating_token_ids(tokenizer: Any, k: int) -> list[int]:
    """Token ids of "1".."K"; each must be a single token (K <= 9 for digit vocabularies)."""
    ids = []
    for rating in range(1, k + 1):
        tokens = tokenizer.encode(str(rating), add_special_tokens=False)
        if len(tokens) != 1:
            raise ValueError(f"rating {rating} is {len(tokens)} tokens for this tokenizer; "
                             f"use a smaller K")
        ids.append(tokens[0])
    return ids


@torch.no_grad()
def rating_probabilities(model: Any, tokenizer: Any, texts: Sequence[str], k: int, *,
                         max_length: int, batch_size: int,
                         autocast: AbstractContextManager | None = None,
                         ) -> tuple[np.ndarray, int]:
    """[n, K] next-token probabilities of the ratings after each text (renormalised over the
    rating tokens), one forward pass per text; and the forward tokens used. Texts longer
    than max_length keep their end (where the rating question is).

    Batches hold texts of similar length, left-padded (positions counted from each text's
    first real token), and only the last position's logits are computed: with a large
    vocabulary (Gemma's 262k) full logits would cost more than the transformer itself.
    The forward runs under `autocast` when given; the softmax is taken in fp64.
    """
    ids = rating_token_ids(tokenizer, k)
    encoded = [tokenizer.encode(t)[-max_length:] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    probs = np.zeros((len(texts), k))
    tokens = 0
    for start in tqdm(range(0, len(order), batch_size), desc="ratings", leave=False):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            input_ids[j, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[j, width - len(encoded[i]):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with autocast or contextlib.nullcontext():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), logits_to_keep=1).logits[:, -1]
        probs[rows] = torch.softmax(logits[:, ids].double(), -1).cpu().numpy()
        tokens += int(mask.sum())
    return probs, tokens


def expected_rating(probs: np.ndarray) -> np.ndarray:
    """sum_k k * p(k) over the last axis (ratings 1..K)."""
    return probs @ np.arange(1, probs.shape[-1] + 1)


def sentence_score(ratings: np.ndarray, alpha: float) -> np.ndarray:
    """[n, prompts] ratings -> mean / (1 + alpha * std) per sample."""
    return ratings.mean(1) / (1.0 + alpha * ratings.std(1))


def model_weighted(scores: Sequence[np.ndarray], n_params: Sequence[int]) -> np.ndarray:
    """Parameter-count-weighted mean of several models' sentence scores."""
    weights = np.asarray(n_params, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), np.stack(scores), axes=1)


class SelectITSelector(Selector):
    """Score = model-level SelectIT score (token -> sentence -> model levels above).

    `prompts` are format strings with {instruction}, {input}, {response} and {k}; `models`
    lists model directories, null meaning the run's base model (cfg.model.dir).
    """

    def __init__(self, name: str, prompts: Sequence[str], k: int = 5, alpha: float = 0.2,
                 models: Sequence[str | None] = (None,), max_length: int = 1024,
                 batch_size: int = 8, **kwargs):
        super().__init__(name, **kwargs)
        if len(prompts) < 1 or len(set(prompts)) != len(prompts):
            raise ValueError("selectit needs one or more distinct rating prompts")
        if not 2 <= k <= 9:
            raise ValueError(f"selectit k={k}: use 2..9 (single-token ratings)")
        if not models:
            raise ValueError("selectit needs at least one model")
        self.prompts, self.k, self.alpha = list(prompts), k, alpha
        self.models = list(models)
        self.max_length, self.batch_size = max_length, batch_size

    def score(self, ctx: SelectionContext) -> np.ndarray:
        per_model, sizes = [], []
        for model_dir in self.models:
            path = Path(model_dir) if model_dir else ctx.model_dir
            model, tokenizer = load_model(path), load_tokenizer(path)
            ratings = []
            for template in self.prompts:
                texts = [template.format(instruction=r["instruction"], input=r["input"],
                                         response=r["response"], k=self.k) for r in ctx.pool]
                probs, tokens = rating_probabilities(model, tokenizer, texts, self.k,
                                                     max_length=self.max_length,
                                                     batch_size=self.batch_size,
                                                     autocast=ctx.autocast(model.device))
                ctx.add_cost(forward_tokens=tokens)
                ratings.append(expected_rating(probs))
            per_model.append(sentence_score(np.stack(ratings, 1), self.alpha))
            sizes.append(sum(p.numel() for p in model.parameters()))
        return model_weighted(per_model, sizes)
