"""The sharded on-disk feature store.

One store directory per (model, input file, max_length; and the precision and layer list when
they are not fp32 and every layer) holds, for every recorded Spec, the recorded layers (all by
default, so that a layer sweep is free) of every sample in fixed-size shards
(`<spec>-<shard>.npy`, float32 [n, layers, dim]) and an `index.json` with each shard's
sha256 and `compute` (the precision and device that extracted it:
naitbench.models.precision; the weights load in fp32 everywhere and the precision is the
forward pass's autocast, so `features.precision=fp32` means fp32 on a GPU too and the key's
precision is what ran). Shards are written atomically and the index after each shard, so an
interrupted extraction resumes at the first missing shard; a shard whose checksum does not match is
recomputed, never used. Only one shard's activations are in memory at a time, and reading
maps the shards instead of loading them.

Data-parallel extraction (`accelerate launch` / torchrun, torch.distributed initialised):
each rank extracts a contiguous range of the missing shards, so ranks write disjoint shard
files, and records them in its own `index.rank<r>.json` part; after a barrier rank 0 folds the
parts into `index.json` in shard order (the same index a single process writes, but for the
summed cost) and removes them. Parts left by an interrupted run are folded in on the next call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from naitbench.features.capture import (
    Spec,
    capture_batch,
    collate,
    length_batches,
    parse_specs,
)
from naitbench.io import atomic_open, content_hash, file_hash, read_jsonl, write_json
from naitbench.models.precision import COMPUTE, autocast, compute_record, resolve_autocast

INDEX = "index.json"
#: wall time of the calls that built a store, kept beside its index rather than in it and
#: ignored by DVC (`*.timing.json` in .dvcignore): a re-extraction that writes the same arrays
#: then gives the features output the same hash, and no selection reading it runs again
TIMING = "cost.timing.json"


def _wall(path: Path) -> float:
    """The store's recorded extraction wall time (0 when none was recorded)."""
    timing = path / TIMING
    return float(json.loads(timing.read_text())["wall_s"]) if timing.exists() else 0.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """Identifies a model directory by its config and weight files' contents."""
    model_dir = Path(model_dir)
    files = sorted([*model_dir.glob("config.json"), *model_dir.glob("*.safetensors")])
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no config.json or safetensors weights")
    return content_hash(*(f"{f.name}:{file_hash(f)}" for f in files))


def store_dir(root: str | Path, model_dir: str | Path, records_file: str | Path,
              max_length: int, autocast_dtype: torch.dtype | None = None,
              layers: Sequence[int] | None = None) -> Path:
    """Where the features of `records_file` under `model_dir` live (fp32, every layer: the
    key of stores written before precision and layer choice existed)."""
    parts = [model_fingerprint(model_dir), file_hash(records_file), str(max_length)]
    if autocast_dtype is not None:
        parts.append(str(autocast_dtype))
    if layers is not None:
        parts.append(json.dumps(sorted(layers)))
    key = content_hash(*parts)
    return Path(root) / f"{Path(records_file).parent.name}-{Path(records_file).stem}-{key}"


def encode_sample(tokenizer: Any, record: dict, max_length: int) -> dict:
    """prompt + response + eos with its response mask, cut to `max_length` tokens keeping at
    least one response token (the end is kept when the prompt alone is too long)."""
    from naitbench.train.data import encode

    encoded = encode(tokenizer, record["prompt"], record["response"])
    if len(encoded["input_ids"]) <= max_length:
        return encoded
    head = {k: v[:max_length] for k, v in encoded.items()}
    if any(label != -100 for label in head["labels"]):
        return head
    return {k: v[-max_length:] for k, v in encoded.items()}


class FeatureStore:
    """Read access to one store directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / INDEX
        if not index_path.exists():
            raise FileNotFoundError(f"no feature store at {self.path}: run the features stage")
        self.index = json.loads(index_path.read_text())

    @property
    def ids(self) -> list[str]:
        return self.index["ids"]

    def n_layers(self, spec: Spec) -> int:
        """How many layers the model has for `spec` (1 for the final norm): what layer indices
        refer to, whether or not every layer was recorded."""
        if spec.site != "final" and self.index.get("model_layers"):
            return int(self.index["model_layers"])
        first = self.index["shards"][0]["files"][spec.name]["file"]
        return int(np.load(self.path / first, mmap_mode="r").shape[1])

    def _positions(self, spec: Spec, layers: Sequence[int] | None) -> list[int] | None:
        """Model layer indices -> positions in the stored arrays."""
        recorded = self.index.get("layers")
        if spec.site == "final" or recorded is None:
            return None if layers is None else list(layers)
        if layers is None:
            return None
        missing = sorted(set(layers) - set(recorded))
        if missing:
            raise KeyError(f"{self.path} records layers {recorded} only, not {missing}: set "
                           f"features.layers to null (every layer) or include them")
        return [recorded.index(layer) for layer in layers]

    @property
    def compute(self) -> dict | None:
        """The precision and device that extracted this store (None: written before either
        was recorded)."""
        return self.index.get(COMPUTE)

    @property
    def cost(self) -> dict:
        """What building this store cost, summed over every extraction call that added to it
        (tokens and batches from the index, wall time from its timing file)."""
        cost = {"forward_tokens": 0, "batches": 0, **self.index.get("cost", {})}
        return {**cost, "wall_s": _wall(self.path) or float(cost.get("wall_s", 0.0))}

    def complete(self, spec: Spec) -> bool:
        """Every shard of `spec` is recorded."""
        return all(spec.name in shard["files"] for shard in self.index["shards"])

    def load(self, spec: Spec | str, layers: Sequence[int] | None = None) -> np.ndarray:
        """[n_samples, len(layers), dim] float32 features (all layers when None)."""
        spec = parse_specs([spec])[0] if isinstance(spec, str) else spec
        if not self.complete(spec):
            raise KeyError(f"{self.path} does not hold {spec.name} for every shard")
        layers = self._positions(spec, layers)
        parts = []
        for shard in self.index["shards"]:
            array = np.load(self.path / shard["files"][spec.name]["file"], mmap_mode="r")
            parts.append(np.asarray(array if layers is None else array[:, list(layers)]))
        return np.concatenate(parts).astype(np.float32, copy=False)


def _verified(path: Path, shard: dict) -> dict:
    """Shard entries whose file exists and matches its checksum; the others are dropped."""
    good = {}
    for name, entry in shard["files"].items():
        file = path / entry["file"]
        if file.exists() and _sha256(file) == entry["sha256"]:
            good[name] = entry
    return good


def _merged_compute(old: dict | None, new: dict) -> dict:
    """A store extended on another device lists both (the precision is part of its key)."""
    if old is None:
        return new
    return {k: ",".join(sorted({*old.get(k, new[k]).split(","), new[k]})) for k in new}


def _dist() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _fold_parts(path: Path, index: dict) -> dict:
    """Add the shards and cost of every rank's index part to `index` (shard order, summed
    tokens and batches, the slowest rank's wall time), delete the parts, return the index."""
    shards = {s["start"]: s for s in index["shards"]}
    parts = sorted(path.glob("index.rank*.json"))
    if not parts:
        return index
    cost, wall = dict(index.get("cost", {})), 0.0
    for part_path in parts:
        part = json.loads(part_path.read_text())
        for shard in part["shards"]:
            known = shards.setdefault(shard["start"], {**shard, "files": {}})
            known["files"].update(shard["files"])
        for key in ("forward_tokens", "batches"):
            cost[key] = cost.get(key, 0) + part["cost"].get(key, 0)
        wall = max(wall, part["cost"].get("wall_s", 0.0))
    index["shards"], index["cost"] = [shards[s] for s in sorted(shards)], cost
    write_json(path / TIMING, {"wall_s": _wall(path) + wall})
    write_json(path / INDEX, index)
    for part_path in parts:
        part_path.unlink()
    return index


def ensure_features(records_file: str | Path, model_dir: str | Path, specs: Sequence[str],
                    *, root: str | Path, max_length: int = 512, batch_size: int = 8,
                    shard_size: int = 256, device: str | None = None,
                    precision: str = "auto", layers: Sequence[int] | None = None,
                    fail_after_shards: int | None = None) -> tuple[FeatureStore, dict]:
    """Make sure every spec's features of `records_file` are stored; return the store and the
    cost of this call (forward passes, tokens, wall time: all zero when nothing was missing).

    `precision` (naitbench.models.precision: auto | fp32 | bf16) is the forward pass's
    autocast; `layers` (block indices) records only those blocks, None every block.
    `fail_after_shards` raises after writing that many shards (tests use it to interrupt).
    """
    from naitbench.config import check_layers
    from naitbench.models.anatomy import anatomy
    from naitbench.models.load import load_model, load_tokenizer, num_layers

    wanted = parse_specs(specs)
    if layers is not None:
        if any(not isinstance(x, int) or x < 0 for x in layers):
            raise ValueError(f"features.layers={list(layers)!r}: use non-negative block indices")
        layers = sorted(set(layers))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_autocast(precision, device)
    path = store_dir(root, model_dir, records_file, max_length, dtype, layers)
    path.mkdir(parents=True, exist_ok=True)
    records = read_jsonl(records_file)
    ids = [r["id"] for r in records]
    index_path = path / INDEX
    rank, world = _dist()
    index = (json.loads(index_path.read_text()) if index_path.exists() else
             {"records_file": str(records_file), "model_dir": str(model_dir), "ids": ids,
              "max_length": max_length, "shard_size": shard_size, "shards": []})
    if layers is not None:
        index["layers"] = layers
    if rank == 0:
        index = _fold_parts(path, index)
    _barrier(world)
    if world > 1 and index_path.exists():
        index = json.loads(index_path.read_text())
    if index["ids"] != ids or index["shard_size"] != shard_size:
        raise ValueError(f"feature store {path} was built for other records or shard size")
    starts = range(0, len(records), shard_size)
    shards = {s["start"]: s for s in index["shards"]}
    for shard in shards.values():
        shard["files"] = _verified(path, shard)
    todo = [(start, [s for s in wanted if s.name not in shards.get(start, {"files": {}})["files"]])
            for start in starts]
    todo = [(start, missing) for start, missing in todo if missing]
    cost = {"forward_tokens": 0, "batches": 0, "wall_s": 0.0}
    if not todo:
        return FeatureStore(path), cost
    index[COMPUTE] = _merged_compute(index.get(COMPUTE), compute_record(dtype, device))
    if world > 1:   # this rank's contiguous range of the missing shards
        per_rank, extra = divmod(len(todo), world)
        first = rank * per_rank + min(rank, extra)
        todo = todo[first:first + per_rank + (rank < extra)]
        base = json.loads(json.dumps(index))   # index.json as on disk (verified entries)
        before_all = {**base.get("cost", {}), "wall_s": _wall(path)}
        index_path = path / f"index.rank{rank:03d}.json"
        shards, before = {}, {}
    else:
        before = {**index.get("cost", {}), "wall_s": _wall(path)}
    began = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype="float32", device=device)   # precision: autocast
    anatomy(model, {spec.site for spec in wanted})   # every part the specs hook, or a clear error
    device = next(model.parameters()).device
    if layers is not None:
        index["model_layers"] = num_layers(model)
        check_layers(layers, index["model_layers"], key="features.layers")
    progress = tqdm(total=sum(min(shard_size, len(records) - s) for s, _ in todo),
                    desc=f"features {Path(records_file).name}", unit="sample",
                    disable=rank != 0)
    for written, (start, missing) in enumerate(todo):
        if fail_after_shards is not None and written >= fail_after_shards:
            raise RuntimeError(f"interrupted after {written} shards (fail_after_shards)")
        chunk = [encode_sample(tokenizer, r, max_length)
                 for r in records[start:start + shard_size]]
        out = {s.name: [None] * len(chunk) for s in missing}
        for batch in length_batches([len(e["input_ids"]) for e in chunk], batch_size):
            ids_t, real, response = collate([chunk[i] for i in batch], tokenizer.pad_token_id,
                                            device)
            with autocast(precision, str(device)):
                pooled = capture_batch(model, ids_t, real, response, missing, layers)
            cost["forward_tokens"] += int(real.sum())
            cost["batches"] += 1
            for name, values in pooled.items():
                for row, i in enumerate(batch):
                    out[name][i] = values[row].cpu().numpy()
            progress.update(len(batch))
        shard = shards.setdefault(start, {"start": start, "end": start + len(chunk), "files": {}})
        for name, rows in out.items():
            file = f"{name}-{start // shard_size:05d}.npy"
            with atomic_open(path / file, "wb") as handle:
                np.save(handle, np.stack(rows).astype(np.float32))
            shard["files"][name] = {"file": file, "sha256": _sha256(path / file)}
        index["shards"] = [shards[s] for s in sorted(shards)]
        cost["wall_s"] = time.perf_counter() - began
        totals = {k: before.get(k, 0) + v for k, v in cost.items()}
        if world > 1:   # a rank's part keeps its wall time until rank 0 folds the parts
            index["cost"] = totals
        else:
            index["cost"] = {k: v for k, v in totals.items() if k != "wall_s"}
            write_json(path / TIMING, {"wall_s": totals["wall_s"]})
        write_json(index_path, index)
    progress.close()
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if world > 1:
        _barrier(world)
        if rank == 0:
            _fold_parts(path, base)
        _barrier(world)
        total = FeatureStore(path).cost   # this call's cost, summed over the ranks
        cost = {k: total[k] - before_all.get(k, 0) for k in cost}
    return FeatureStore(path), cost
