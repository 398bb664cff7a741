"""LESS-style gradient similarity (Xia et al., 2024).

1. Warmup: LoRA-train the base model on a seeded random share of the pool for a few epochs,
   keeping every epoch's checkpoint (weights, AdamW state, mean learning rate).
2. For each checkpoint k: per-candidate gradients g of the mean response loss w.r.t. the LoRA
   parameters (exact, batched with torch.func vmap), turned into Adam update directions
   with that checkpoint's moments
   (m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, bias-corrected at step t+1,
   d = m'_hat / (sqrt(v'_hat) + eps)); the target samples' plain gradients g.
3. Both are projected to `proj_dim` with a fixed sparse sign projection (CountSketch: each
   gradient coordinate is added, with a random sign, to one random output coordinate; both
   drawn from the seed), an unbiased Johnson-Lindenstrauss map that costs O(D) per sample
   instead of a dense D x dim matrix, batch by batch, so the full [n, D] gradient matrix
   never sits in memory; then L2-normalised.
4. similarity(c, t) = sum_k w_k * cos(d_k(c), g_k(t)), w_k the checkpoints' mean learning
   rates normalised to sum to 1 (so it stays a cosine in [-1, 1]); LESS's own rule
   (`subtask_max_mean`): max over subtasks s of the mean over target samples t in s. Any
   other rule of naitbench.select.rules can be configured; `knn_kde` compares candidates by
   the same weighted gradient cosine.
Projected features are stored under the selector's artefact directory and reused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.func import functional_call, grad, vmap
from tqdm import tqdm

from naitbench.io import content_hash
from naitbench.models.load import load_tokenizer
from naitbench.models.precision import PRECISION_NAMES, resolve_autocast
from naitbench.select.protocol import SelectionContext
from naitbench.select.targeted import SimilaritySelector
from naitbench.train import METRICS_FILE, train
from naitbench.train.data import IGNORE_INDEX, collate, encode
from naitbench.train.loop import _build_model


def _mean_response_loss(model: Any, params: dict, frozen: dict, ids: torch.Tensor,
                        mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One right-padded sample's mean response loss as a function of `params` (for vmap).

    The causal + padding mask is passed explicitly as a 4D additive mask, so no
    data-dependent branch of the model's mask construction runs under vmap."""
    length = ids.shape[0]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool, device=ids.device))
    allowed = allowed & mask.bool()[None, :]
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
    logits = functional_call(model, (params, frozen), args=(), kwargs={
        "input_ids": ids[None], "attention_mask": additive,
        "position_ids": torch.arange(length, device=ids.device)[None]}).logits[0, :-1]
    targets = labels[1:]
    weight = (targets != IGNORE_INDEX).float()
    token_loss = torch.nn.functional.cross_entropy(logits.float(), targets.clamp(min=0),
                                                   reduction="none")
    return (token_loss * weight).sum() / weight.sum()


def per_sample_grads(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]],
                     max_length: int, batch_size: int = 8,
                     transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     autocast: AbstractContextManager | None = None,
                     ) -> tuple[torch.Tensor, int]:
    """[n, D] gradients of each sample's mean response-token loss w.r.t. the trainable
    parameters (flattened in named_parameters order), in batches with torch.func
    (vmap over grad: exact per-sample gradients); and the tokens processed. `transform`
    maps each batch's [b, D] block (e.g. precondition and project) before it is kept; the
    forward and backward run under `autocast` when given (gradients are kept in fp32)."""
    device = next(model.parameters()).device
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    encoded = [{k: v[:max_length] for k, v in encode(tokenizer, p, r).items()} for p, r in pairs]
    if any(all(x == IGNORE_INDEX for x in e["labels"][1:]) for e in encoded):
        raise ValueError(f"a sample keeps no response token within max_length={max_length}")
    per_sample = vmap(grad(partial(_mean_response_loss, model)), in_dims=(None, None, 0, 0, 0))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    blocks: dict[int, torch.Tensor] = {}
    tokens = 0
    for start in tqdm(range(0, len(order), batch_size), desc="gradients", leave=False):
        rows = order[start:start + batch_size]
        batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id)
        with autocast or contextlib.nullcontext():
            grads = per_sample(params, frozen, *(batch[k].to(device) for k in
                                                 ("input_ids", "attention_mask", "labels")))
        block = torch.cat([grads[n].flatten(1) for n in params], dim=1).float()
        for row, value in zip(rows, transform(block) if transform else block, strict=True):
            blocks[row] = value
        tokens += int(batch["attention_mask"].sum())
    return torch.stack([blocks[i] for i in range(len(encoded))]), tokens


def adam_direction(grads: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                   step: int, betas: tuple[float, float], eps: float) -> torch.Tensor:
    """[n, D] Adam update directions of gradients [n, D] from the moments [D] at `step`."""
    b1, b2 = betas
    m = (b1 * exp_avg + (1 - b1) * grads) / (1 - b1 ** (step + 1))
    v = (b2 * exp_avg_sq + (1 - b2) * grads ** 2) / (1 - b2 ** (step + 1))
    return m / (v.sqrt() + eps)


class SignSketch:
    """CountSketch projection R^D -> R^dim: coordinate j goes to bucket h(j) with sign s(j),
    both drawn once from the seed. E[<Px, Py>] = <x, y>, with variance ~ |x|^2 |y|^2 / dim."""

    def __init__(self, in_dim: int, dim: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.buckets = torch.randint(0, dim, (in_dim,), generator=gen)
        self.signs = torch.randint(0, 2, (in_dim,), generator=gen).float().mul_(2).sub_(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[n, D] -> [n, dim]."""
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        return out.index_add_(1, self.buckets.to(x.device),
                              x.float() * self.signs.to(x.device))


def normalise(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x, dim=-1).double().cpu().numpy()


class LESSSelector(SimilaritySelector):
    """LESS influence of each candidate on each target sample (module docstring)."""

    default_rule = "subtask_max_mean"

    def __init__(self, name: str, warmup_ratio: float = 0.05, warmup_epochs: int = 4,
                 proj_dim: int = 8192, max_length: int = 1024, grad_batch_size: int = 2,
                 train: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(name, **kwargs)
        if not 0 < warmup_ratio <= 1 or warmup_epochs < 1 or proj_dim < 1:
            raise ValueError("less: warmup_ratio in (0, 1], warmup_epochs >= 1, proj_dim >= 1")
        self.warmup_ratio, self.warmup_epochs = warmup_ratio, warmup_epochs
        self.proj_dim, self.max_length = proj_dim, max_length
        self.grad_batch_size = grad_batch_size
        self.train_overrides = dict(train or {})

    def _warmup(self, ctx: SelectionContext, root: Path) -> tuple[Path, dict]:
        """The warmup run (reused when its metrics exist); its directory and metrics."""
        tcfg = OmegaConf.to_container(ctx.cfg.train, resolve=True)
        tcfg.update({"method": "lora", "epochs": self.warmup_epochs, "max_steps": None,
                     **self.train_overrides})
        n = max(1, round(self.warmup_ratio * len(ctx.pool)))
        chosen = sorted(np.random.default_rng(ctx.seed).choice(len(ctx.pool), n, replace=False))
        examples = [{k: ctx.pool[i][k] for k in ("id", "prompt", "response")} for i in chosen]
        key = content_hash(json.dumps(tcfg, sort_keys=True), str(ctx.model_dir),
                           *[e["id"] for e in examples], str(ctx.seed))[:12]
        out = root / f"warmup-{key}"
        if not (out / METRICS_FILE).exists():
            train(tcfg, ctx.model_dir, examples, out, seed=ctx.seed, save_every_epoch=True)
        return out, {"cfg": tcfg, "metrics": json.loads((out / METRICS_FILE).read_text())}

    def _features(self, model: Any, tokenizer: Any, records: Sequence[dict], path: Path,
                  ctx: SelectionContext, optimizer: dict | None) -> np.ndarray:
        """Projected, normalised (Adam-preconditioned when `optimizer`) gradient features."""
        if path.exists():
            return np.load(path)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        sketch = SignSketch(n_params, self.proj_dim, ctx.seed)
        transform = sketch
        if optimizer is not None:
            states = [optimizer["state"][i] for i in sorted(optimizer["state"])]
            group = optimizer["param_groups"][0]
            exp_avg = torch.cat([s["exp_avg"].flatten() for s in states])
            exp_avg_sq = torch.cat([s["exp_avg_sq"].flatten() for s in states])
            step, betas, eps = int(states[0]["step"]), tuple(group["betas"]), group["eps"]

            def transform(block: torch.Tensor) -> torch.Tensor:
                return sketch(adam_direction(block, exp_avg.to(block.device),
                                             exp_avg_sq.to(block.device), step, betas, eps))
        projected, tokens = per_sample_grads(model, tokenizer,
                                             [(r["prompt"], r["response"]) for r in records],
                                             self.max_length, self.grad_batch_size, transform,
                                             ctx.autocast(next(model.parameters()).device))
        ctx.add_cost(forward_tokens=tokens, backward_tokens=tokens)
        features = normalise(projected)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, features)
        tmp.replace(path)
        return features

    def _checkpoint_features(self, ctx: SelectionContext
                             ) -> list[tuple[float, np.ndarray, dict[str, np.ndarray]]]:
        """Per warmup checkpoint: its weight, the pool's features and every target's (for
        the records the context sees), computed once per context."""
        key = ("less", self.name, tuple((t, tuple(r["id"] for r in records))
                                        for t, records in ctx.targets.items()))
        if key in ctx.loaded:
            return ctx.loaded[key]
        root = ctx.artefact_dir(self.name)
        warm, info = self._warmup(ctx, root)
        tokenizer = load_tokenizer(ctx.model_dir)
        epochs = info["metrics"]["per_epoch"]
        total_lr = sum(epoch["mean_lr"] for epoch in epochs)
        out = []
        for epoch in epochs:
            ckpt = warm / epoch["checkpoint"]
            model = _build_model(info["cfg"], ctx.model_dir)
            state = json.loads((ckpt / "state.json").read_text())
            trained = load_file(ckpt / "trainable.safetensors")
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            if names != state["trainable_params"] or set(names) != set(trained):
                raise ValueError(f"{ckpt}: its trainable parameters do not match this LoRA")
            model.load_state_dict(trained, strict=False)
            model.eval()
            optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
            dtype = resolve_autocast(ctx.precision, str(next(model.parameters()).device))
            feats = (root / "features" / f"{warm.name}-{ckpt.name}-d{self.proj_dim}"
                     f"-s{ctx.seed}-L{self.max_length}-{PRECISION_NAMES[dtype]}")
            pool = self._features(model, tokenizer, ctx.pool, feats / "pool.npy", ctx, optimizer)
            targets = {}
            for target, records in ctx.targets.items():
                ids = content_hash(*[r["id"] for r in records])[:8]
                targets[target] = self._features(model, tokenizer, records,
                                                 feats / f"{target}-{ids}.npy", ctx, None)
            out.append((epoch["mean_lr"] / total_lr if total_lr > 0 else 1 / len(epochs),
                        pool, targets))
        ctx.loaded[key] = out
        return out

    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        return sum(weight * (pool @ targets[target].T)
                   for weight, pool, targets in self._checkpoint_features(ctx))

    def vectors(self, ctx: SelectionContext) -> np.ndarray:
        return np.concatenate([np.sqrt(weight) * pool
                               for weight, pool, _ in self._checkpoint_features(ctx)], axis=1)
