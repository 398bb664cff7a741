"""Checkpoints: trainable weights, optimizer, scheduler, RNG and progress, written atomically.

Layout of one checkpoint directory (`step-<n>` for resume, `epoch-<k>` when every epoch is kept):
  trainable.safetensors   the parameters that train (LoRA matrices, or every weight), by name
  optimizer.pt            the optimizer's state_dict (AdamW moments in the order of
                          state.json's `trainable_params`)
  scheduler.pt            the learning-rate scheduler's state_dict
  scaler.pt               fp16 only: the gradient scaler's state
  rng-<rank>.pt           python/numpy/torch(/cuda) RNG states of each process (tensors,
                          numbers and tuples only)
  state.json              progress (step, epoch, batches consumed, loss curve...), fingerprint
  model/                  epoch checkpoints only: a loadable adapter (PEFT) or model directory
A directory appears under its final name only once complete, so a crash mid-save leaves the
previous checkpoint as the latest one. Checkpoints may come from another machine or person:
every .pt file is read with `torch.load(weights_only=True)`, which refuses pickled code.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from naitbench.io import write_json

STATE_FILE = "state.json"


ADAPTER_CONFIG = "adapter_config.json"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from (dropout uses torch's), as types a
    weights-only load accepts (numpy's key array as a tensor)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_pretrained_stable(model: Any, path: Path) -> None:
    """`save_pretrained`, with a PEFT adapter's config written the same way by every process:
    peft lists `target_modules` from a set, in an order that changes between processes,
    which would give identical adapters different DVC hashes."""
    model.save_pretrained(path)
    config_file = Path(path) / ADAPTER_CONFIG
    if config_file.exists():
        config = json.loads(config_file.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters that receive gradients, by name, on the CPU."""
    return {name: p.detach().to("cpu").contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(accelerator: Any, path: Path, *, model: Any, optimizer: Any,
                    scheduler: Any, state: dict, save_model_dir: bool = False) -> Path:
    """Write a checkpoint to `path` (all processes call this; the main one writes shared
    files)."""
    tmp = path.with_name(f".{path.name}.tmp")
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(unwrapped), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        if save_model_dir:
            save_pretrained_stable(unwrapped, tmp / "model")
        write_json(tmp / STATE_FILE, state)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    accelerator.wait_for_everyone()
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete `step-*` checkpoint with the most steps, if any."""
    done = [p for p in directory.glob("step-*") if (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def prune_checkpoints(directory: Path, keep: Path) -> None:
    """Drop every resume checkpoint but `keep` (only the latest is needed to resume)."""
    for path in directory.glob("step-*"):
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(accelerator: Any, path: Path, *, model: Any, optimizer: Any,
                    scheduler: Any) -> dict:
    """Restore weights, optimizer, scheduler and this process's RNG; return the progress."""
    state = json.loads((path / STATE_FILE).read_text())
    weights = load_file(str(path / "trainable.safetensors"))
    unwrapped = accelerator.unwrap_model(model)
    params = dict(unwrapped.named_parameters())
    if set(weights) != set(trainable_state(unwrapped)):
        raise ValueError(f"checkpoint {path} holds other parameters than the model trains")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if not rng_file.exists():
        raise ValueError(f"checkpoint {path} has no RNG state for process "
                         f"{accelerator.process_index}: resume with the same number of processes")
    set_rng_state(torch.load(rng_file, weights_only=True))
    return state
