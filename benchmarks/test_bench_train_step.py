"""The LoRA training step on a CPU in fp32 (what every AVX2-only CPU runs: bf16 is emulated
there), against the default settings in the same run: micro-batch x accumulation at the same
effective batch, intra-op threads, and `torch.compile` (NAITBENCH_BENCH_COMPILE=1: compiling
takes minutes on two cores).

Every variant trains the same records in the same length-grouped order from the same
initial adapter, interleaved round by round, best of 2; the ratio is the default's wall time
over the variant's (above 1: the variant is faster).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
from conftest import N
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.io import read_jsonl
from naitbench.models.load import load_tokenizer
from naitbench.train.data import encode_all, epoch_batches
from naitbench.train.loop import ResponseLoss, _build_model, _optimizer_step, collate_with_targets

COMPILE = os.environ.get("NAITBENCH_BENCH_COMPILE") == "1"


def _variants(cfg: dict) -> dict[str, dict]:
    """(micro-batch, accumulation, threads, compiled) per variant; the default first."""
    effective = cfg["batch_size"] * cfg["grad_accum"]
    threads = torch.get_num_threads()
    out = {"default": {"batch": cfg["batch_size"], "accum": cfg["grad_accum"],
                       "threads": threads, "compile": False}}
    for batch in (2, 8):
        if batch != cfg["batch_size"] and effective % batch == 0:
            out[f"micro-batch {batch} x {effective // batch}"] = {
                "batch": batch, "accum": effective // batch, "threads": threads,
                "compile": False}
    if threads > 1:
        out["1 thread"] = {**out["default"], "threads": 1}
    if COMPILE:
        out["torch.compile"] = {**out["default"], "compile": True}
    return out


def test_lora_step_fp32_settings_vs_default(benchmark, bench_model, bench_source):
    """tokens/s of each variant of the fp32 LoRA step over the default's."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cfg = OmegaConf.to_container(compose([]).train)   # the default LoRA settings
    tokenizer = load_tokenizer(bench_model)
    records = read_jsonl(bench_source / "pool" / "pool.jsonl")[:N]
    encoded, _ = encode_all(tokenizer, records, cfg["max_length"])
    lengths = [len(x["input_ids"]) for x in encoded]
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(mixed_precision="no", cpu=True)
    torch.manual_seed(0)
    model = _build_model(cfg, bench_model)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    loss_model = ResponseLoss(model)
    compiled = torch.compile(loss_model) if COMPILE else None
    variants = _variants(cfg)

    def run_for(spec: dict) -> Callable[[], None]:
        order = epoch_batches(lengths, spec["batch"], 0, 0, cfg["group_by_length"])
        batches = [collate_with_targets([encoded[i] for i in b], tokenizer.pad_token_id)
                   for b in order]
        steps = [batches[i:i + spec["accum"]] for i in range(0, len(batches), spec["accum"])]

        def run() -> None:
            model.load_state_dict(initial, strict=False)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                          lr=cfg["lr"])
            step_model = compiled if spec["compile"] else loss_model
            before = torch.get_num_threads()
            torch.set_num_threads(spec["threads"])
            try:
                stats = [_optimizer_step(accelerator, step_model, optimizer, micro,
                                         cfg["max_grad_norm"]) for micro in steps]
                torch.stack(stats).tolist()
            finally:
                torch.set_num_threads(before)
        return run

    runs = {name: run_for(spec) for name, spec in variants.items()}
    warm_began = time.perf_counter()
    for run in runs.values():   # warm-up (and compilation) outside the timed rounds
        run()
    warm_up_s = time.perf_counter() - warm_began
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(2):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    best = {name: min(t) for name, t in times.items()}
    benchmark.pedantic(runs["default"], rounds=1, iterations=1)
    tokens = sum(lengths)
    benchmark.extra_info.update({
        "precision": "fp32", "records": len(records), "tokens": tokens,
        "warm_up_s": warm_up_s,
        "variants": {name: {**variants[name], "tokens_per_s": tokens / best[name],
                            "ratio_vs_default": best["default"] / best[name]}
                     for name in variants}})
    assert all(t > 0 for t in best.values())
