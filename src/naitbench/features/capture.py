"""Forward hooks that record pooled activations of every layer in one pass.

Sites: `mlp` = the input of each block's MLP output projection (the MLP neurons; `down_proj`
in Llama-style models), `residual` = each block's output hidden state, `final` = the hidden
state after the final norm (one "layer"); naitbench.models.anatomy finds them by
architecture.
Poolings (the formatted sample is prompt + response + eos, so its last token is also the last
response token):
- over the response tokens: `mean`, `response_first` (the first response token);
- over the whole sample: `first` (its first token), `last` (its last token), `sample_mean`
  (every real token), `weighted` (mean with weights proportional to the position 1..n, RDS+).
`first` and `last` give NAIT's activation drift A(t_K) - A(t_1) without storing the drift, so
either recipe (docs/nait.md) reads the same pass. Padding never enters a pool, so a sample's
features do not depend on its batch. Only the transformer body runs (no LM head).

A pool is one batched matmul per layer and pooling, weights [B, 1, T] x activations [B, T, D],
in the activations' dtype: under bf16 autocast no fp32 copy of any layer's activations is made
(the matmul kernels accumulate bf16 products in fp32; only the [B, D] result is rounded).
`layers` restricts the hooks to the blocks a run needs (default: every block).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from naitbench.models.anatomy import anatomy

SITES = ("mlp", "residual", "final")
POOLINGS = ("mean", "last", "weighted", "first", "response_first", "sample_mean")
FORWARD_PASSES: Counter = Counter()   # "batches" and "tokens" run through a model body


@dataclass(frozen=True, order=True)
class Spec:
    """One recorded feature: an activation site and a pooling."""

    site: str
    pooling: str

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"unknown activation site {self.site!r}; choose from {SITES}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose from {POOLINGS}")

    @property
    def name(self) -> str:
        return f"{self.site}.{self.pooling}"


def parse_specs(names: Sequence[str]) -> list[Spec]:
    """['mlp.mean', 'final.weighted'] -> sorted unique Specs."""
    specs = set()
    for name in names:
        site, _, pooling = str(name).partition(".")
        specs.add(Spec(site, pooling))
    return sorted(specs)


def pool(hidden: torch.Tensor, response: torch.Tensor, real: torch.Tensor,
         pooling: str) -> torch.Tensor:
    """Pool [B, T, D] activations to fp32 [B, D] over the masked tokens."""
    if pooling in ("last", "first", "response_first"):
        if pooling == "last":
            position = (response * torch.arange(response.shape[1], device=response.device)
                        ).argmax(1)
        else:   # argmax returns the first maximal position: the first real / response token
            position = (real if pooling == "first" else response).argmax(1)
        return hidden[torch.arange(hidden.shape[0]), position].float()
    if pooling in ("mean", "sample_mean"):
        weights = (response if pooling == "mean" else real).to(hidden.dtype)
    else:
        weights = (real * torch.cumsum(real, dim=1)).to(hidden.dtype)
    total = weights.float().sum(1, keepdim=True).clamp_min(1e-12)
    return torch.bmm(weights.unsqueeze(1), hidden).squeeze(1).float() / total


@torch.no_grad()
def capture_batch(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  response_mask: torch.Tensor, specs: Sequence[Spec],
                  layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Pooled features of one padded batch: {spec name: [B, len(layers), D]} (all blocks when
    `layers` is None; final: 1 layer)."""
    by_site: dict[str, list[Spec]] = {}
    for spec in specs:
        by_site.setdefault(spec.site, []).append(spec)
    parts = anatomy(model, by_site)
    blocks = parts.blocks
    chosen = list(range(len(blocks))) if layers is None else list(layers)
    outputs: dict[str, list] = {s.name: [None] * len(chosen) for s in specs if s.site != "final"}
    outputs.update({s.name: [None] for s in specs if s.site == "final"})

    def record(site: str, index: int, hidden: torch.Tensor) -> None:
        for spec in by_site[site]:
            outputs[spec.name][index] = pool(hidden, response_mask, attention_mask, spec.pooling)

    handles = []
    try:
        for i, layer in enumerate(chosen):
            block = blocks[layer]
            if "mlp" in by_site:
                handles.append(parts.mlp_outputs[layer].register_forward_pre_hook(
                    lambda _m, args, i=i: record("mlp", i, args[0])))
            if "residual" in by_site:
                handles.append(block.register_forward_hook(
                    lambda _m, _a, out, i=i: record("residual", i,
                                                   out[0] if isinstance(out, tuple) else out)))
        if "final" in by_site:
            handles.append(parts.final_norm.register_forward_hook(
                lambda _m, _a, out: record("final", 0, out)))
        parts.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    FORWARD_PASSES["batches"] += 1
    FORWARD_PASSES["tokens"] += int(attention_mask.sum())
    return {name: torch.stack(layers, dim=1) for name, layers in outputs.items()}


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by similar length (less padding), in a deterministic order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def collate(encoded: Sequence[dict], pad_id: int,
            device: str | torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask and response mask of encoded samples."""
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(encoded), width), dtype=torch.long)
    response = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, sample in enumerate(encoded):
        n = len(sample["input_ids"])
        ids[row, :n] = torch.tensor(sample["input_ids"])
        real[row, :n] = 1
        response[row, :n] = torch.tensor([label != -100 for label in sample["labels"]])
    return ids.to(device), real.to(device), response.to(device)
