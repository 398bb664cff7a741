"""Training and extraction speed against what they replace, on the same batches in the same run,
and what bf16 costs NAIT in accuracy.

Each row runs on the CPU (the default precision, `auto`) and, when a GPU is present, on it
(batch 16 x 512 tokens, bf16): the same functions, so the CPU run proves the GPU code path.
- training: the loop's step (LM head on response positions only, statistics left on the
  device) against the step it replaced, kept here as the reference: full [B, T, V] logits cast
  to fp32, the loss read back to the host every step, deterministic kernels on a GPU;
- extraction: NAIT's hooked body forward against a full forward with the LM head, which is
  what a user would otherwise run over the pool;
- bf16 accuracy: NAIT's top 10% of the pool from bf16 features against fp32's (Jaccard).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import (
    BATCH,
    MAX_LENGTH,
    REPO,
    SPECS,
    N,
    device_or_skip,
    feature_batches,
    make_data_dir,
)
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.features import ensure_features, parse_specs
from naitbench.features.capture import capture_batch
from naitbench.io import read_jsonl
from naitbench.models.load import load_model, load_tokenizer
from naitbench.models.precision import autocast, cpu_has_native_bf16, resolve_autocast
from naitbench.nait.library import build_library, score_pool
from naitbench.nait.selector import activation_features, feature_specs, resolve_layers
from naitbench.train.data import IGNORE_INDEX, encode_all, epoch_batches
from naitbench.train.loop import (
    ResponseLoss,
    _build_model,
    _optimizer_step,
    collate_with_targets,
    resolve_precision,
)

DEVICES = ["cpu", "cuda"]
GPU_BATCH, GPU_MAX_LENGTH, GPU_BATCHES = 16, 512, 8
JACCARD_GOAL = 0.9


def _precision(device: str) -> str:
    return "bf16" if device == "cuda" else "auto"


def _records(source, device: str, batch_size: int) -> list[dict]:
    """N pool records on the CPU; on a GPU enough for GPU_BATCHES full batches."""
    pool = read_jsonl(source / "pool" / "pool.jsonl")
    return pool[:N if device == "cpu" else max(N, GPU_BATCHES * batch_size)]


def _best_interleaved(runs: dict[str, Callable[[], None]], rounds: int,
                      device: str) -> dict[str, float]:
    """Best wall time of each run over `rounds` interleaved rounds: both see the same load."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - began)
    return {name: min(t) for name, t in times.items()}


def _full_logits_step(accelerator, model, optimizer, batch, max_grad_norm) -> float:
    """Reference: the training step before the response-only head (full logits in fp32, the
    loss read back to the host every step)."""
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    with accelerator.autocast():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
        loss_sum = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE_INDEX, reduction="sum")
    accelerator.backward(loss_sum / max(n, 1))
    loss = float(loss_sum) / max(n, 1)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


@pytest.mark.parametrize("device", DEVICES)
def test_training_throughput_vs_full_logits(benchmark, bench_model, bench_source, device):
    """tokens/s of the loop's LoRA step over the full-logits reference, same batches."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = device_or_skip(device)
    cfg = OmegaConf.to_container(compose([]).train)   # the default LoRA settings
    batch_size, max_length = ((GPU_BATCH, GPU_MAX_LENGTH) if device == "cuda"
                              else (cfg["batch_size"], cfg["max_length"]))
    AcceleratorState._reset_state(True)   # a fresh precision for this row
    accelerator = Accelerator(mixed_precision=resolve_precision(_precision(device)),
                              cpu=device == "cpu")
    torch.manual_seed(0)
    model = _build_model(cfg, bench_model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg["lr"])
    loss_model, optimizer = accelerator.prepare(ResponseLoss(model), optimizer)
    tokenizer = load_tokenizer(bench_model)
    encoded, _ = encode_all(tokenizer, _records(bench_source, device, batch_size), max_length)
    order = epoch_batches([len(x["input_ids"]) for x in encoded], batch_size, 0, 0,
                          cfg["group_by_length"])
    batches = [{k: v.to(accelerator.device) for k, v in collate_with_targets(
        [encoded[i] for i in b], tokenizer.pad_token_id).items()} for b in order]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    clip = cfg["max_grad_norm"]

    def old(items=batches) -> None:
        torch.use_deterministic_algorithms(device == "cuda", warn_only=True)
        for batch in items:
            _full_logits_step(accelerator, model, optimizer, batch, clip)

    def new(items=batches) -> None:
        torch.use_deterministic_algorithms(False)
        stats = [_optimizer_step(accelerator, loss_model, optimizer, [b], clip) for b in items]
        torch.stack(stats).tolist()   # one read-back, as one log entry

    old(batches[:1])   # warm-up: first-call allocations are not timed
    new(batches[:1])
    best = _best_interleaved({"old": old, "new": new}, rounds=2, device=device)
    benchmark.pedantic(new, rounds=1, iterations=1)
    torch.use_deterministic_algorithms(False)
    ratio = best["old"] / best["new"]
    benchmark.extra_info.update({
        "device": device, "precision": accelerator.mixed_precision, "tokens": tokens,
        "batches": len(batches), "batch_size": batch_size, "max_length": max_length,
        "old_tokens_per_s": tokens / best["old"], "new_tokens_per_s": tokens / best["new"],
        "throughput_ratio": ratio})
    assert ratio > 0


@pytest.mark.parametrize("device", DEVICES)
def test_extraction_vs_full_forward(benchmark, bench_model, bench_source, device):
    """tokens/s of NAIT's capture pass over a full forward with the LM head, same batches."""
    device = device_or_skip(device)
    precision = _precision(device)
    model = load_model(bench_model, dtype="float32", device=device)
    batch_size = GPU_BATCH if device == "cuda" else BATCH
    batches = feature_batches(bench_model, _records(bench_source, device, batch_size), device,
                              batch_size)
    tokens = sum(int(real.sum()) for _, real, _ in batches)
    specs = parse_specs(SPECS)

    @torch.no_grad()
    def full() -> None:
        with autocast(precision, device):
            for ids, real, _ in batches:
                model(input_ids=ids, attention_mask=real, use_cache=False)

    def capture() -> None:
        with autocast(precision, device):
            for ids, real, response in batches:
                capture_batch(model, ids, real, response, specs)

    capture()   # warm-up
    best = _best_interleaved({"full": full, "capture": capture}, rounds=3, device=device)
    benchmark.pedantic(capture, rounds=1, iterations=1)
    ratio = best["full"] / best["capture"]
    dtype = resolve_autocast(precision, device)
    benchmark.extra_info.update({
        "device": device, "autocast": str(dtype), "tokens": tokens, "batch_size": batch_size,
        "full_forward_tokens_per_s": tokens / best["full"],
        "nait_tokens_per_s": tokens / best["capture"], "throughput_ratio": ratio})
    assert ratio > 0


NAIT = OmegaConf.load(REPO / "conf" / "selector" / "nait.yaml")
NAIT_SPECS = feature_specs(NAIT.site, NAIT.feature, NAIT.span)


def _nait_scores(store_pool, store_target) -> np.ndarray:
    """NAIT's default scoring (conf/selector/nait.yaml) from two feature stores."""
    layers = resolve_layers(NAIT.layers, store_pool.n_layers(NAIT_SPECS[0]))
    pool = activation_features(lambda s: store_pool.load(s, layers), NAIT_SPECS)
    target = activation_features(lambda s: store_target.load(s, layers), NAIT_SPECS)
    library = build_library(pool, target, layers, NAIT.k, NAIT.centre)
    return score_pool(library, pool, NAIT.scoring, NAIT.rest)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_nait_top10_vs_fp32(benchmark, bench_model, bench_source, bench_target, device,
                                 tmp_path):
    """Jaccard overlap of NAIT's top 10% (2N pool records, N target records) with bf16
    features against fp32 features; `auto` uses bf16 for extraction only where it passes."""
    device = device_or_skip(device)
    data = make_data_dir(bench_source, tmp_path / "data", 2 * N, bench_target, N)
    files = [data / "pool" / "pool.jsonl", data / "targets" / bench_target / "indomain.jsonl"]

    def extract(precision: str) -> np.ndarray:
        stores = [ensure_features(f, bench_model, [s.name for s in NAIT_SPECS],
                                  root=tmp_path / precision,
                                  max_length=MAX_LENGTH, batch_size=BATCH, device=device,
                                  precision=precision)[0] for f in files]
        return _nait_scores(*stores)

    began = time.perf_counter()
    fp32 = extract("fp32")
    fp32_s = time.perf_counter() - began
    bf16 = benchmark.pedantic(extract, args=("bf16",), rounds=1, iterations=1)
    k = max(1, round(0.1 * len(fp32)))
    top32, top16 = (set(np.argsort(-s, kind="stable")[:k].tolist()) for s in (fp32, bf16))
    jaccard = len(top32 & top16) / len(top32 | top16)
    ranks = [np.argsort(np.argsort(s)) for s in (fp32, bf16)]
    benchmark.extra_info.update({
        "device": device, "pool": len(fp32), "top_k": k, "jaccard_top10": jaccard,
        "spearman": float(np.corrcoef(*ranks)[0, 1]), "goal": JACCARD_GOAL,
        "passes": jaccard >= JACCARD_GOAL, "native_bf16_cpu": cpu_has_native_bf16(),
        "fp32_extraction_s": fp32_s, "bf16_over_fp32_time": benchmark.stats.stats.min / fp32_s})
    assert 0 <= jaccard <= 1
