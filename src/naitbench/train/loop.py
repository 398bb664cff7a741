"""Fine-tuning loop: LoRA (peft) or full fine-tuning of a causal LM on prompt/response pairs.

Distribution, mixed precision and device placement go through `accelerate.Accelerator`, so the
same code runs on a CPU, one GPU or `accelerate launch` over several GPUs.

The loss of one optimizer step is the mean token cross-entropy over every response token of
its `grad_accum` micro-batches on every process: micro-batch losses are summed and divided by
the step's global response-token count, so the result does not depend on how a step is split
into micro-batches or processes.

Speed: the LM head runs only on the positions whose next token is labelled (the response),
never on the whole [batch, length, vocabulary]; with a 49K-token vocabulary the full logits and
their fp32 copy were most of a small model's memory traffic per step. Step statistics stay on
the device and reach the host every `log_every` steps (one synchronisation per log entry, not
per step), so a divergence is noticed at the next log entry or checkpoint.
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
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from naitbench.errors import ConfigError, UserError
from naitbench.io import content_hash, write_json
from naitbench.models.precision import COMPUTE, compute_record, resolve_autocast
from naitbench.train.accelerator import fresh_accelerator
from naitbench.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_pretrained_stable,
)
from naitbench.train.data import IGNORE_INDEX, collate, encode_all, epoch_batches

if TYPE_CHECKING:
    from omegaconf import DictConfig

METRICS_FILE = "train_metrics.json"
MODEL_SUBDIR = "model"
EPOCHS_SUBDIR = "epochs"
METHODS = ("lora", "full")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "no")   # "no": accelerate's name for fp32
_AUTOCAST = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}   # accelerate's names


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: training stops rather than save a broken model."""


class ResumeMismatch(UserError, ValueError):
    """A checkpoint left by a run with a different config, data or seed."""


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Fail before loading a model when a training setting cannot work."""
    cfg = {"log_every": 1, **cfg}   # configs written before the setting: every step
    if cfg["method"] not in METHODS:
        raise ValueError(f"train.method={cfg['method']!r}: use one of {METHODS}")
    if cfg["scheduler"] not in SCHEDULERS:
        raise ValueError(f"train.scheduler={cfg['scheduler']!r}: use one of {SCHEDULERS}")
    if cfg["precision"] not in PRECISIONS:
        raise ValueError(f"train.precision={cfg['precision']!r}: use one of {PRECISIONS}")
    for key in ("epochs", "batch_size", "grad_accum", "max_length", "log_every"):
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
    """accelerate's mixed_precision for train.precision: `auto` is bf16 where the hardware
    computes it natively (a GPU, fp16 on one without bf16; a CPU with AVX512-BF16/AMX), fp32
    ("no") elsewhere (naitbench.models.precision)."""
    if name in ("fp32", "no"):
        return "no"
    if name != "auto":
        return name
    dtype = resolve_autocast("auto", "cuda" if torch.cuda.is_available() else "cpu")
    return {dtype: name for name, dtype in _AUTOCAST.items()}[dtype]


def lora_targets(model: Any, wanted: Any) -> str | list[str]:
    """`train.lora.target_modules` checked against the model: "all-linear" (peft: every
    linear layer but the output head, whatever the architecture names them) or module names
    of which at least one exists; a ConfigError lists the names this model has otherwise."""
    if isinstance(wanted, str):
        if wanted != "all-linear":
            raise ConfigError(f"train.lora.target_modules={wanted!r}: give a list of module "
                              f"names or 'all-linear'")
        return wanted
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear | _conv1d_type())}
    if not names & set(wanted):
        raise ConfigError(f"train.lora.target_modules={list(wanted)}: none is a layer of this "
                          f"{model.config.model_type} model (its linear layers: "
                          f"{sorted(names)}); name some of them or use 'all-linear'")
    return list(wanted)


def _conv1d_type() -> type:
    """transformers' Conv1D (GPT-2's linear layers), which peft adapts like a Linear."""
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def _build_model(cfg: Mapping[str, Any], model_dir: str | Path) -> Any:
    """The base model in fp32 (mixed precision autocasts), wrapped with LoRA if configured."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if cfg["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        lora = cfg["lora"]
        model = get_peft_model(model, LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=lora_targets(model, lora["target_modules"]), bias="none",
            task_type="CAUSAL_LM"))
    model.train()
    return model


class ResponseLoss(torch.nn.Module):
    """Summed next-token cross-entropy over the labelled positions of a batch.

    Runs the model's body, gathers the hidden states of the `target_index` positions (flat
    indices into [batch, length - 1] whose next token is labelled) and applies the LM head to
    those rows only; the cross-entropy is taken in fp32. The same loss as the full-logits
    formula, without the [batch, length, vocabulary] tensor. It wraps the (PEFT) model as a
    module so that data-parallel training calls it through DDP's forward.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") \
            else self.model
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state
        rows = hidden[:, :-1].flatten(0, 1).index_select(0, target_index)
        logits = base.get_output_embeddings()(rows).float()
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        targets = labels[:, 1:].flatten().index_select(0, target_index)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def collate_with_targets(batch: Sequence[Mapping[str, Any]], pad_id: int) -> dict:
    """`collate` plus `target_index`, the labelled next-token positions, found on the host
    (so the device never has to report how many there are)."""
    out = collate(batch, pad_id)
    out["target_index"] = (out["labels"][:, 1:] != IGNORE_INDEX).flatten().nonzero()[:, 0]
    return out


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
    `callback` receives each log entry (main process only): one every `cfg.log_every`
    optimizer steps and one at each epoch's last step, its loss the mean step loss since the
    previous entry.
    """
    from accelerate.utils import set_seed
    from omegaconf import OmegaConf
    from transformers import get_scheduler

    from naitbench.models.load import load_tokenizer

    cfg = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
    cfg.setdefault("log_every", 1)   # configs written before the setting: every step
    check_train_config(cfg)
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    precision = resolve_precision(cfg["precision"])
    if cfg.get("deterministic", True) and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    accelerator = fresh_accelerator(precision)
    world = accelerator.num_processes

    tokenizer = load_tokenizer(model_dir)
    encoded, counts = encode_all(tokenizer, examples, cfg["max_length"])
    lengths = [len(x["input_ids"]) for x in encoded]
    set_seed(seed)
    model = _build_model(cfg, model_dir)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    loss_model, optimizer = accelerator.prepare(ResponseLoss(model), optimizer)

    def loader(epoch: int) -> Any:
        batches = epoch_batches(lengths, cfg["batch_size"], seed, epoch, cfg["group_by_length"])
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would see other dropout masks.
        dl = torch.utils.data.DataLoader(
            encoded, batch_sampler=batches, generator=torch.Generator(),
            collate_fn=partial(collate_with_targets, pad_id=tokenizer.pad_token_id))
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
                             "per_epoch": [], "resumed_from_step": None,
                             "final_loss": None, "unlogged": [], "epoch_losses": [],
                             "epoch_lrs": []}
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

    pending: list[tuple[int, int, float, torch.Tensor]] = []   # (step, epoch, lr, stats)

    def flush() -> None:
        """Bring the pending steps' statistics to the host (one synchronisation)."""
        if not pending:
            return
        rows = torch.stack([p[3] for p in pending]).tolist()
        for (step, epoch, lr, _), (loss_sum, n_targets, tokens) in zip(pending, rows,
                                                                       strict=True):
            loss = loss_sum / max(n_targets, 1)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss} at step {step} (epoch {epoch}, lr {lr:.3g}); training "
                    f"stopped. Lower train.lr, use train.precision=bf16 or fp32 instead of "
                    f"fp16, or check the data and model for bad values")
            state["tokens"] += int(tokens)
            state["response_tokens"] += int(n_targets)
            state["unlogged"].append(loss)
            state["final_loss"] = loss
            state["epoch_losses"].append(loss)
        pending.clear()

    def checkpoint(path: Path, save_model_dir: bool = False) -> Path:
        flush()
        return save_checkpoint(accelerator, path, model=model, optimizer=optimizer,
                               scheduler=scheduler, state=state, save_model_dir=save_model_dir)

    def resume_point() -> None:
        path = checkpoint(checkpoint_dir / f"step-{state['step']:08d}")
        if accelerator.is_main_process:
            prune_checkpoints(checkpoint_dir, keep=path)

    session_start, tokens_before = time.perf_counter(), state["tokens"]
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
                stats = _optimizer_step(accelerator, loss_model, optimizer,
                                        [next(it) for _ in range(n_micro)],
                                        cfg.get("max_grad_norm"))
                scheduler.step()
                state["step"] += 1
                state["batches_done"] += n_micro
                state["epoch_lrs"].append(lr)
                pending.append((state["step"], epoch + 1, lr, stats))
                last_of_epoch = (state["batches_done"] >= len(dl)
                                 or state["step"] >= total_steps)
                if state["step"] % cfg["log_every"] == 0 or last_of_epoch:
                    flush()
                    entry = {"step": state["step"], "epoch": epoch + 1,
                             "loss": sum(state["unlogged"]) / len(state["unlogged"]),
                             "lr": lr, "tokens": state["tokens"]}
                    state["unlogged"] = []
                    state["loss_curve"].append(entry)
                    session_s = time.perf_counter() - session_start
                    state["elapsed_s"] = elapsed_before + session_s
                    tok_s = (state["tokens"] - tokens_before) / session_s
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", tok_s=f"{tok_s:.0f}")
                    if callback is not None and accelerator.is_main_process:
                        callback(entry)
                bar.update(1)
                if every and state["step"] % every == 0 and state["step"] < total_steps:
                    state["elapsed_s"] = elapsed_before + time.perf_counter() - session_start
                    resume_point()
            state["per_epoch"].append(_epoch_summary(state, epoch + 1))
            state["epoch"] += 1
            state["batches_done"] = 0
            if save_every_epoch:
                state["per_epoch"][-1]["checkpoint"] = f"{EPOCHS_SUBDIR}/epoch-{epoch + 1}"
                checkpoint(out_dir / state["per_epoch"][-1]["checkpoint"], save_model_dir=True)
            if state["step"] < total_steps:
                resume_point()
    state["elapsed_s"] = elapsed_before + time.perf_counter() - session_start

    metrics = {
        "method": cfg["method"], "seed": seed, **counts, "examples_trained": len(encoded),
        "epochs": epochs, "steps": state["step"], "steps_per_epoch": steps_per_epoch,
        "tokens": state["tokens"], "response_tokens": state["response_tokens"],
        "wall_time_s": state["elapsed_s"],
        "tokens_per_s": state["tokens"] / state["elapsed_s"] if state["elapsed_s"] else 0.0,
        "final_loss": state["final_loss"], "log_every": cfg["log_every"],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "precision": precision, "num_processes": world,
        COMPUTE: compute_record(_AUTOCAST[accelerator.mixed_precision], accelerator.device),
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


def _optimizer_step(accelerator: Any, loss_model: Any, optimizer: Any, micro: list[dict],
                    max_grad_norm: float | None) -> torch.Tensor:
    """One optimizer step over `micro`-batches; returns, on the device and summed over
    processes, [summed response-token loss, response tokens, tokens]."""
    device = accelerator.device
    n_global = accelerator.reduce(torch.tensor(
        float(sum(b["target_index"].numel() for b in micro)), device=device), "sum")
    scale = accelerator.num_processes / n_global.clamp_min(1)
    loss_sum = torch.zeros((), device=device)
    tokens = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(loss_model):
            with accelerator.autocast():
                part = loss_model(**batch)
            accelerator.backward(part * scale)
        loss_sum += part.detach()
        tokens += batch["attention_mask"].sum()
    if max_grad_norm:
        accelerator.clip_grad_norm_(loss_model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, tokens = accelerator.reduce(torch.stack([loss_sum, tokens]), "sum")
    return torch.stack([loss_sum, n_global, tokens])


def _epoch_summary(state: dict, epoch: int) -> dict:
    """Mean loss and mean learning rate of an epoch's steps (LESS weights checkpoints by the
    latter); clears the epoch's per-step lists."""
    losses, lrs = state["epoch_losses"], state["epoch_lrs"]
    summary = {"epoch": epoch, "steps": len(lrs), "mean_loss": sum(losses) / len(losses),
               "mean_lr": sum(lrs) / len(lrs), "checkpoint": None}
    state["epoch_losses"], state["epoch_lrs"] = [], []
    return summary


def _save_final(model: Any, tokenizer: Any, path: Path, *, full: bool) -> None:
    """Write the adapter (or the full model and its tokenizer) under `path`, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained_stable(model, tmp)
    if full:
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
