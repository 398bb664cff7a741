"""Training examples: a subset file joined with the pool, tokenised with a response-only mask
(`naitbench.data.encoding`, the encoding the pool's length policy was decided with).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from naitbench.data.encoding import IGNORE_INDEX, encode, response_tokens
from naitbench.errors import UserError
from naitbench.io import read_jsonl

__all__ = [
    "IGNORE_INDEX",
    "LengthError",
    "SubsetError",
    "collate",
    "encode",
    "encode_all",
    "epoch_batches",
    "load_examples",
]

FULL_POOL = "full"


class SubsetError(UserError, ValueError):
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


class LengthError(ValueError):
    """An example whose prompt leaves its response no token within the training length: the
    pool was prepared (length policy) for another length than the one training uses."""


def encode_all(tokenizer: Any, examples: Sequence[Mapping[str, str]],
               max_length: int) -> tuple[list[dict], dict[str, int]]:
    """Encode every example, cut on the right to `max_length` tokens (counted as `truncated`).

    Nothing is dropped here: an example left with no response token raises LengthError,
    since prepare_data's length policy decides such records before any selector sees them.
    """
    kept, counts = [], {"examples": len(examples), "truncated": 0}
    no_room = []
    for example in examples:
        enc = encode(tokenizer, example["prompt"], example["response"])
        counts["truncated"] += len(enc["input_ids"]) > max_length
        if not response_tokens(enc["labels"], max_length):
            no_room.append(example["id"])
        kept.append({"id": example["id"], **{k: v[:max_length] for k, v in enc.items()}})
    if no_room:
        raise LengthError(
            f"{len(no_room)} of {len(examples)} examples keep no response token within "
            f"train.max_length={max_length} (e.g. {no_room[:3]}): the pool was prepared for "
            f"another length; set pool.max_length to the training length and re-run "
            f"prepare_data")
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

    With `group_by_length`, examples are ordered by length rank plus a seeded uniform jitter
    of one batch's width (a sliding window of `batch_size` ranks), cut into batches, and the
    batches shuffled. The window is counted in ranks, not in a share of the subset, so every
    subset size gets batches that differ between seeds and epochs (sorting fixed windows of
    50 batches gave a 99-sample subset the same batches every time), while each batch holds
    examples of neighbouring lengths and padding stays close to a full sort's.
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        by_length = sorted(order, key=lambda j: -lengths[j])   # ties in shuffled order
        key = {j: rank + rng.uniform(0, batch_size) for rank, j in enumerate(by_length)}
        order = sorted(order, key=key.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
