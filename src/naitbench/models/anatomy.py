"""Where a causal LM keeps what the suite reads, found by architecture rather than one naming.

The features stage runs the decoder body (no LM head) and hooks three parts: the blocks (their
outputs: `residual`), each block's MLP output projection (its input is the MLP neurons:
`mlp`) and the final norm (`final`). Llama-style models (Llama, Qwen2/3, Mistral, Gemma) name
them `layers[i].mlp.down_proj` and `norm`; GPT-NeoX `layers[i].mlp.dense_4h_to_h` and
`final_layer_norm`; GPT-2 `h[i].mlp.c_proj` and `ln_f`; Phi `layers[i].mlp.fc2` and
`final_layernorm`; OPT `decoder.layers[i].fc2`. The body is the model's own `get_decoder()`;
the names below are tried in order, and a model without a part that the configured feature
specs need is refused before any work, with what was looked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from naitbench.errors import ConfigError

#: where the block list sits in the body (the first ModuleList of num_hidden_layers blocks)
BLOCK_LISTS = ("layers", "h", "blocks", "decoder.layers")
#: a block's MLP output projection
MLP_OUTPUTS = ("mlp.down_proj", "mlp.dense_4h_to_h", "mlp.c_proj", "mlp.fc2", "fc2",
               "feed_forward.w2", "mlp.w2")
#: the body's final norm
FINAL_NORMS = ("norm", "final_layer_norm", "ln_f", "final_layernorm", "decoder.final_layer_norm")
#: what each activation site needs
SITE_PARTS = {"residual": "blocks", "mlp": "mlp_outputs", "final": "final_norm"}


@dataclass
class Anatomy:
    """A model's body and the parts hooked by capture (None: not found)."""

    body: Any
    blocks: Any = None
    mlp_outputs: list | None = None
    final_norm: Any = None
    #: which name each part was found under, for messages and the features index
    names: dict[str, str] = field(default_factory=dict)


def _get(module: Any, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def anatomy(model: Any, sites: Iterable[str] = ()) -> Anatomy:
    """The parts of `model` (a causal LM, or its body) that capture hooks; raises a
    ConfigError naming the architecture and what was looked for when a part one of `sites`
    needs is missing."""
    import torch

    body = model.get_decoder() if hasattr(model, "get_decoder") else model
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None)
    found = Anatomy(body=body)
    for path in BLOCK_LISTS:
        blocks = _get(body, path)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) and (
                n_layers is None or len(blocks) == n_layers):
            found.blocks, found.names["blocks"] = blocks, path
            break
    if found.blocks is not None:
        for path in MLP_OUTPUTS:
            outputs = [_get(block, path) for block in found.blocks]
            if all(isinstance(o, torch.nn.Module) for o in outputs):
                found.mlp_outputs = outputs
                found.names["mlp_outputs"] = f"{found.names['blocks']}[i].{path}"
                break
    for path in FINAL_NORMS:
        norm = _get(body, path)
        if isinstance(norm, torch.nn.Module):
            found.final_norm, found.names["final_norm"] = norm, path
            break
    looked = {"blocks": BLOCK_LISTS, "mlp_outputs": MLP_OUTPUTS, "final_norm": FINAL_NORMS}
    for site in sites:
        part = SITE_PARTS[site]
        if getattr(found, part) is None:
            kind = getattr(config, "model_type", type(model).__name__)
            raise ConfigError(
                f"model {kind} ({type(model).__name__}): no {part.replace('_', ' ')} found for "
                f"the '{site}' features (looked for {', '.join(looked[part])} in its body "
                f"{type(body).__name__}); drop the '{site}.*' specs from features.specs or "
                f"use a model that has them")
    return found
