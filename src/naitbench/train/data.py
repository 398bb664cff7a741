"""Training examples: a subset file joined with the pool, tokenised with a response-only mask.

A training sequence is `prompt + response + eos`. The loss covers the response and the eos
token only: every token whose text ends at or before the end of the prompt gets label -100
(so do padding and special tokens the tokenizer adds in front, such as a BOS). A token that
straddles the boundary (BPE may merge the prompt's final newline with the response's leading
spaces) belongs to the response, as it is needed to produce the response's first characters.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from naitbench.io import read_jsonl

IGNORE_INDEX = -100
FULL_POOL = "full"


class SubsetError(ValueError):
    """A subset file that cannot be trained on (missing, empty, unknown or repeated ids)."""


def load_examples(data_dir: str | Path, subset: str) -> list[dict]:
    """The pool records of a subset (`full`: the whole pool), as {id, prompt, response}.

    Subset files are `data_dir/subsets/<subset>.jsonl`, one {"id": ...} per line; their order
    is kept (training shuffles anyway).
    """
    data_dir = Path(data_dir)
    pool_path = data_dir / "pool" / "pool.jsonl"
    if not pool_path.exists():
        raise FileNotFoundError(f"pool file {pool_path} does not exist: run the prepare_data "
                                f"stage first (dvc repro prepare_data)")
    pool = {r["id"]: {"id": r["id"], "prompt": r["prompt"], "response": r["response"]}
            for r in read_jsonl(pool_path)}
    if subset == FULL_POOL:
        return list(pool.values())
    subset_path = data_dir / "subsets" / f"{subset}.jsonl"
    if not subset_path.exists():
        raise SubsetError(f"subset file {subset_path} does not exist: run the select stage "
                          f"for '{subset}' first, or train on '{FULL_POOL}' (the whole pool)")
    ids = [r["id"] for r in read_jsonl(subset_path)]
    if not ids:
        raise SubsetError(f"subset file {subset_path} selects no samples")
    unknown = [i for i in ids if i not in pool]
    if unknown:
        raise SubsetError(f"subset file {subset_path}: {len(unknown)} ids are not in the pool "
                          f"{pool_path} (e.g. {unknown[:3]}); was it selected from another pool?")
    if len(set(ids)) != len(ids):
        raise SubsetError(f"subset file {subset_path} repeats ids")
    return [pool[i] for i in ids]


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


def encode_all(tokenizer: Any, examples: Sequence[Mapping[str, str]],
               max_length: int) -> tuple[list[dict], dict[str, int]]:
    """Encode every example, truncated on the right to `max_length` tokens; drop (and count)
    those left with no response token."""
    kept, counts = [], {"examples": len(examples), "truncated": 0, "dropped_no_response": 0}
    for example in examples:
        enc = encode(tokenizer, example["prompt"], example["response"])
        counts["truncated"] += len(enc["input_ids"]) > max_length
        enc = {key: value[:max_length] for key, value in enc.items()}
        if all(label == IGNORE_INDEX for label in enc["labels"]):
            counts["dropped_no_response"] += 1
            continue
        kept.append({"id": example["id"], **enc})
    if not kept:
        raise ValueError(f"no example keeps a response token within max_length={max_length}")
    return kept, counts


def collate(batch: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[row, :n] = torch.tensor(x["input_ids"])
        labels[row, :n] = torch.tensor(x["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool) -> list[list[int]]:
    """The micro-batches (example indices) of one epoch, a pure function of (seed, epoch).

    With `group_by_length`, the shuffled order is cut into windows of 50 batches, each
    window is sorted by length (less padding), and the batches are shuffled again.
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * 50
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lambda j: -lengths[j])]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
