"""How a (prompt, response) pair becomes token ids and loss labels, shared by the pool's
length policy (preparation) and the trainer, so both agree on what fits in a length.

A training sequence is `prompt + response + eos`. The loss covers the response and the eos
token only: every token whose text ends at or before the end of the prompt gets label -100
(so do padding and special tokens the tokenizer adds in front, such as a BOS). A token that
straddles the boundary (BPE may merge the prompt's final newline with the response's leading
spaces) belongs to the response, as it is needed to produce the response's first characters.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def encode(tokenizer: Any, prompt: str, response: str) -> dict[str, list[int]]:
    """Token ids and labels of one example (not truncated)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("training needs a fast tokenizer (character offsets for the loss mask)")
    enc = tokenizer(prompt + response, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    boundary = len(prompt)
    labels = [tok if end > boundary else IGNORE_INDEX
              for tok, (_, end) in zip(ids, enc["offset_mapping"], strict=True)]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": labels}


def response_tokens(labels: list[int], max_length: int) -> int:
    """How many loss-bearing (response or eos) tokens survive a cut to `max_length` tokens."""
    return sum(label != IGNORE_INDEX for label in labels[:max_length])
