"""Fine-tuning loop: LoRA (peft) or full fine-tuning of a causal LM on prompt/response pairs.

Distribution, mixed precision and device placement go through `accelerate.Accelerator`, so the
same code runs on a CPU, one GPU or `accelerate launch` over several GPUs.

The loss of one optimizer step is the mean token cross-entropy over every response token of
its `grad_accum` micro-batches on every process: micro-batch losses are summed and divided by
the step's global response-token count, so the result does not depend on how a step is split
into micro-batches or processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from naitbench.io import content_hash, write_json
from naitbench.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from naitbench.train.data import IGNORE_INDEX, collate, encode_all, epoch_batches

METRICS_FILE = "train_metrics.json"
MODEL_SUBDIR = "model"
EPOCHS_SUBDIR = "epochs"
METHODS = ("lora", "full")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
PRECISIONS = ("auto", "no", "bf16", "fp16")


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: training stops rather than save a broken model."""


class ResumeMismatch(ValueError):
    """A checkpoint left by a run with a different config, data or seed."""


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Fail before loading a model when a training setting cannot work."""
    if cfg["method"] not in METHODS:
        raise ValueError(f"train.method={cfg['method']!r}: use one of {METHODS}")
    if cfg["scheduler"] not in SCHEDULERS:
        raise ValueError(f"train.scheduler={cfg['scheduler']!r}: use one of {SCHEDULERS}")
    if cfg["precision"] not in PRECISIONS:
        raise ValueError(f"train.precision={cfg['precision']!r}: use one of {PRECISIONS}")
    for key in ("epochs", "batch_size", "grad_accum", "max_length"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"train.{key}={cfg[key]!r}: must be a positive integer")
    if cfg.get("max_steps") is not None and cfg["max_steps"] < 1:
        raise ValueError(f"train.max_steps={cfg['max_steps']!r}: positive integer or null")
    if not cfg["lr"] > 0:
        raise ValueError(f"train.lr={cfg['lr']!r}: must be positive")
    if cfg["method"] == "lora" and not cfg.get("lora"):
        raise ValueError("train.method=lora needs a train.lora block (r, alpha, dropout, "
                         "target_modules)")


def resolve_precision(name: str) -> str:
    """accelerate's mixed_precision: bf16 (or fp16) on a GPU, none (fp32) on the CPU."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _build_model(cfg: Mapping[str, Any], model_dir: str | Path) -> Any:
    """The base model in fp32 (mixed precision autocasts), wrapped with LoRA if configured."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if cfg["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        lora = cfg["lora"]
        model = get_peft_model(model, LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM"))
    model.train()
    return model


def _response_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled (response) positions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX, reduction="sum")


def _n_targets(batch: Mapping[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def _fingerprint(cfg: Mapping[str, Any], model_dir: str | Path, encoded: Sequence[Mapping],
                 seed: int, world: int) -> str:
    """What must match for a checkpoint to be resumed (not where or how often it is saved)."""
    keep = {k: v for k, v in cfg.items() if k not in ("checkpoint_every", "subset", "seed")}
    model_cfg = (Path(model_dir) / "config.json").read_text()
    ids = json.dumps([(x["id"], len(x["input_ids"])) for x in encoded])
    return content_hash(json.dumps(keep, sort_keys=True), model_cfg, ids, str(seed), str(world))


def train(cfg: Mapping[str, Any] | DictConfig, model_dir: str | Path,
          examples: Sequence[Mapping[str, str]], out_dir: str | Path, *, seed: int,
          save_every_epoch: bool = False, checkpoint_dir: str | Path | None = None,
          resume: bool = True, callback: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune `model_dir` on `examples` ({id, prompt, response}); return the metrics.

    Writes `out_dir/model/` (a PEFT adapter for LoRA, a full model directory with tokenizer
    otherwise) and `out_dir/train_metrics.json`. With `save_every_epoch`, every epoch also
    leaves `out_dir/epochs/epoch-<k>/` (see naitbench.train.checkpoint), for LESS-style
    gradient features. Resume checkpoints go to `checkpoint_dir` (default
    `out_dir/checkpoints`) every `cfg.checkpoint_every` optimizer steps and at each epoch end;
    a later call with the same config, data and seed continues from the latest one and gives
    the same result as an uninterrupted run. They are removed once training finishes.
    `callback` receives each optimizer step's log entry (main process only).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from naitbench.models.load import load_tokenizer

    cfg = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
    check_train_config(cfg)
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    precision = resolve_precision(cfg["precision"])
    if cfg.get("deterministic", True) and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    accelerator = Accelerator(mixed_precision=precision)
    world = accelerator.num_processes

    tokenizer = load_tokenizer(model_dir)
    encoded, counts = encode_all(tokenizer, examples, cfg["max_length"])
    lengths = [len(x["input_ids"]) for x in encoded]
    set_seed(seed)
    model = _build_model(cfg, model_dir)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    model, optimizer = accelerator.prepare(model, optimizer)

    def loader(epoch: int) -> Any:
        batches = epoch_batches(lengths, cfg["batch_size"], seed, epoch, cfg["group_by_length"])
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would see other dropout masks.
        dl = torch.utils.data.DataLoader(
            encoded, batch_sampler=batches, generator=torch.Generator(),
            collate_fn=partial(collate, pad_id=tokenizer.pad_token_id))
        return accelerator.prepare_data_loader(dl)

    batches_per_epoch = len(loader(0))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg["grad_accum"])
    total_steps = cfg["epochs"] * steps_per_epoch
    if cfg.get("max_steps"):
        total_steps = min(total_steps, cfg["max_steps"])
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = get_scheduler(cfg["scheduler"], optimizer,
                              num_warmup_steps=math.ceil(cfg["warmup_ratio"] * total_steps),
                              num_training_steps=total_steps)

    fingerprint = _fingerprint(cfg, model_dir, encoded, seed, world)
    state: dict[str, Any] = {"fingerprint": fingerprint, "trainable_params": trainable,
                             "epoch": 0, "batches_done": 0, "step": 0, "tokens": 0,
                             "response_tokens": 0, "elapsed_s": 0.0, "loss_curve": [],
                             "per_epoch": [], "resumed_from_step": None}
    found = latest_checkpoint(checkpoint_dir) if resume else None
    if found is not None:
        saved = json.loads((found / "state.json").read_text())
        if saved["fingerprint"] != fingerprint:
            raise ResumeMismatch(
                f"checkpoint {found} was written by a run with another config, data, seed or "
                f"process count; delete {checkpoint_dir} to start over")
        state = load_checkpoint(accelerator, found, model=model, optimizer=optimizer,
                                scheduler=scheduler)
        state["resumed_from_step"] = state["step"]

    def checkpoint(path: Path, save_model_dir: bool = False) -> Path:
        return save_checkpoint(accelerator, path, model=model, optimizer=optimizer,
                               scheduler=scheduler, state=state, save_model_dir=save_model_dir)

    def resume_point() -> None:
        path = checkpoint(checkpoint_dir / f"step-{state['step']:08d}")
        if accelerator.is_main_process:
            prune_checkpoints(checkpoint_dir, keep=path)

    session_start, session_tokens = time.perf_counter(), 0
    elapsed_before = state["elapsed_s"]
    every = cfg.get("checkpoint_every") or 0
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {cfg['method']}",
               unit="step", disable=not accelerator.is_local_main_process)
    with bar:
        while state["epoch"] < epochs and state["step"] < total_steps:
            epoch = state["epoch"]
            dl = loader(epoch)
            it = iter(accelerator.skip_first_batches(dl, state["batches_done"])
                      if state["batches_done"] else dl)
            while state["batches_done"] < len(dl) and state["step"] < total_steps:
                n_micro = min(cfg["grad_accum"], len(dl) - state["batches_done"])
                lr = scheduler.get_last_lr()[0]
                loss, n_targets, tokens = _optimizer_step(
                    accelerator, model, optimizer, [next(it) for _ in range(n_micro)],
                    cfg.get("max_grad_norm"), where=f"step {state['step'] + 1} (epoch "
                    f"{epoch + 1}, lr {lr:.3g})")
                scheduler.step()
                state["step"] += 1
                state["batches_done"] += n_micro
                state["tokens"] += tokens
                state["response_tokens"] += n_targets
                entry = {"step": state["step"], "epoch": epoch + 1, "loss": loss, "lr": lr,
                         "tokens": state["tokens"]}
                state["loss_curve"].append(entry)
                session_tokens += tokens
                session_s = time.perf_counter() - session_start
                state["elapsed_s"] = elapsed_before + session_s
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{session_tokens / session_s:.0f}")
                if callback is not None and accelerator.is_main_process:
                    callback(entry)
                if every and state["step"] % every == 0 and state["step"] < total_steps:
                    resume_point()
            summary = _epoch_summary(state["loss_curve"], epoch + 1)
            state["per_epoch"].append(summary)
            state["epoch"] += 1
            state["batches_done"] = 0
            if save_every_epoch:
                summary["checkpoint"] = f"{EPOCHS_SUBDIR}/epoch-{epoch + 1}"
                checkpoint(out_dir / summary["checkpoint"], save_model_dir=True)
            if state["step"] < total_steps:
                resume_point()

    metrics = {
        "method": cfg["method"], "seed": seed, **counts, "examples_trained": len(encoded),
        "epochs": epochs, "steps": state["step"], "steps_per_epoch": steps_per_epoch,
        "tokens": state["tokens"], "response_tokens": state["response_tokens"],
        "wall_time_s": state["elapsed_s"],
        "tokens_per_s": state["tokens"] / state["elapsed_s"] if state["elapsed_s"] else 0.0,
        "final_loss": state["loss_curve"][-1]["loss"],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "precision": precision, "num_processes": world,
        "resumed_from_step": state["resumed_from_step"],
        "loss_curve": state["loss_curve"], "per_epoch": state["per_epoch"],
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_final(accelerator.unwrap_model(model), tokenizer, out_dir / MODEL_SUBDIR,
                    full=cfg["method"] == "full")
        write_json(out_dir / METRICS_FILE, metrics)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return metrics


def _optimizer_step(accelerator: Any, model: Any, optimizer: Any, micro: list[dict],
                    max_grad_norm: float | None, where: str) -> tuple[float, int, int]:
    """One optimizer step over `micro`-batches; returns (loss, response tokens, tokens), all
    summed over processes."""
    n_global = int(accelerator.reduce(
        torch.tensor(sum(_n_targets(b) for b in micro), device=accelerator.device), "sum"))
    scale = accelerator.num_processes / max(n_global, 1)
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                part = _response_loss_sum(model, batch)
            accelerator.backward(part * scale)
        loss_sum += part.detach()
    loss = float(accelerator.reduce(loss_sum, "sum")) / max(n_global, 1)
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss is {loss} at {where}; training stopped. Lower train.lr, use "
            f"train.precision=bf16 or no instead of fp16, or check the data and model for bad "
            f"values")
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = int(accelerator.reduce(torch.tensor(
        sum(int(b["attention_mask"].sum()) for b in micro), device=accelerator.device), "sum"))
    return loss, n_global, tokens


def _epoch_summary(loss_curve: list[dict], epoch: int) -> dict:
    """Mean loss and mean learning rate of an epoch's steps (LESS weights checkpoints by the
    latter)."""
    steps = [e for e in loss_curve if e["epoch"] == epoch]
    return {"epoch": epoch, "steps": len(steps),
            "mean_loss": sum(e["loss"] for e in steps) / len(steps),
            "mean_lr": sum(e["lr"] for e in steps) / len(steps), "checkpoint": None}


def _save_final(model: Any, tokenizer: Any, path: Path, *, full: bool) -> None:
    """Write the adapter (or the full model and its tokenizer) under `path`, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if full:
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
