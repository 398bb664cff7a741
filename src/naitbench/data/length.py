"""The length policy: what becomes of a pool record whose prompt leaves its response no token
within the training length.

Decided once, at preparation, so every selector chooses among records that train as
selected (the trainer drops nothing; it raises if a record has no room). `drop` leaves such
records out of the pool; `truncate_prompt` cuts the prompt from the left (its end, with the
template's response header, stays) until the response gets min(its length, max_length // 2)
tokens. Room is measured with the trainer's own encoding (`naitbench.data.encoding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from naitbench.data.encoding import encode, response_tokens
from naitbench.errors import ConfigError

POLICIES = ("drop", "truncate_prompt")
#: a prompt this many tokens short of max_length always leaves room (BOS, boundary merge)
_MARGIN = 4
_CUT_STEP = 8


def response_room(tokenizer: Any, prompt: str, response: str, max_length: int) -> int:
    """Response tokens (eos included) the trainer keeps within `max_length`."""
    return response_tokens(encode(tokenizer, prompt, response)["labels"], max_length)


def cut_prompt(tokenizer: Any, prompt: str, response: str, max_length: int) -> tuple[str, int]:
    """The prompt cut from the left on a token boundary, and how many prompt tokens went."""
    offsets = tokenizer(prompt, add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    n_response = len(tokenizer(response, add_special_tokens=False)["input_ids"]) + 1
    keep = max_length - min(n_response, max_length // 2) - _MARGIN
    while keep > 0:
        start = offsets[max(0, len(offsets) - keep)][0]
        if response_room(tokenizer, prompt[start:], response, max_length):
            return prompt[start:], len(offsets) - min(keep, len(offsets))
        keep -= _CUT_STEP
    raise ConfigError(f"max_length={max_length} is too short to keep any prompt token")


def apply_length_policy(records: Sequence[dict], tokenizer: Any, policy: str,
                        max_length: int) -> tuple[list[dict], dict]:
    """The records that train as they are (prompts cut under `truncate_prompt`) and counts.

    Records need `prompt`, `response` and `n_prompt_tokens`; a cut record gets its new
    prompt, token count and `prompt_cut_tokens`.
    """
    if policy not in POLICIES:
        raise ConfigError(f"pool.length_policy={policy!r}: use one of {POLICIES}")
    if not isinstance(max_length, int) or max_length < 2 * _CUT_STEP:
        raise ConfigError(f"pool.max_length={max_length!r}: must be an integer >= {2 * _CUT_STEP}")
    kept, dropped, cut = [], [], 0
    for record in records:
        if record["n_prompt_tokens"] + _MARGIN < max_length or response_room(
                tokenizer, record["prompt"], record["response"], max_length):
            kept.append(record)
        elif policy == "drop":
            dropped.append(record["id"])
        else:
            prompt, removed = cut_prompt(tokenizer, record["prompt"], record["response"],
                                         max_length)
            n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            kept.append({**record, "prompt": prompt, "n_prompt_tokens": n_prompt,
                         "prompt_cut_tokens": removed})
            cut += 1
    counts = {"policy": policy, "max_length": max_length,
              "no_room": len(dropped) + cut, "dropped": len(dropped), "prompt_cut": cut,
              "dropped_ids": dropped}
    return kept, counts
