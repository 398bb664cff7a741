"""A tiny random Llama with a real tokenizer: the model every test runs on, in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def build_tiny(tokenizer: Any, out_dir: str | Path, *, layers: int = 4, hidden: int = 64,
               intermediate: int = 128, heads: int = 4, seed: int = 0) -> Path:
    """Save a randomly initialised LlamaForCausalLM (seeded) and `tokenizer` to `out_dir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
