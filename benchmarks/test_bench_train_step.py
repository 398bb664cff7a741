"""The LoRA training step on a CPU, against the default settings in the same run: in fp32
(what every AVX2-only CPU runs: bf16 is emulated there) micro-batch x accumulation at the same
effective batch, intra-op threads and `torch.compile` (NAITBENCH_BENCH_COMPILE=1: compiling
takes minutes on two cores); and bf16 autocast against fp32, beside the bf16 gains the
estimate's probes (naitbench.estimate.bf16_gain) read on the same machine.

Every variant trains the same records in the same length-grouped order from the same
initial adapter, interleaved round by round, best of 2; the ratio is the default's wall time
over the variant's (above 1: the variant is faster).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from conftest import N
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.estimate import bf16_gain
from naitbench.io import read_jsonl
from naitbench.models.load import load_tokenizer
from naitbench.train.accelerator import fresh_accelerator
from naitbench.train.data import encode_all, epoch_batches
from naitbench.train.loop import ResponseLoss, _build_model, _optimizer_step, collate_with_targets

COMPILE = os.environ.get("NAITBENCH_BENCH_COMPILE") == "1"


def _variants(cfg: dict) -> dict[str, dict]:
    """(micro-batch, accumulation, threads, compiled) per variant; the default first."""
    effective = cfg["batch_size"] * cfg["grad_accum"]
    threads = torch.get_num_threads()
    out = {"default": {"batch": cfg["batch_size"], "accum": cfg["grad_accum"],
                       "threads": threads, "compile": False, "precision": "no"}}
    for batch in (2, 8):
        if batch != cfg["batch_size"] and effective % batch == 0:
            out[f"micro-batch {batch} x {effective // batch}"] = {
                **out["default"], "batch": batch, "accum": effective // batch}
    if threads > 1:
        out["1 thread"] = {**out["default"], "threads": 1}
    if COMPILE:
        out["torch.compile"] = {**out["default"], "compile": True}
    return out


def _time_variants(cfg: dict, model_dir: Path, source: Path, variants: dict[str, dict]
                   ) -> tuple[dict[str, Callable[[], None]], dict[str, float], int, float]:
    """Each variant's run under the train settings `cfg`, its best-of-2 wall time
    (interleaved), the tokens one run trains, and the warm-up time (first run of each
    variant, compilation included)."""
    tokenizer = load_tokenizer(model_dir)
    records = read_jsonl(source / "pool" / "pool.jsonl")[:N]
    encoded, _ = encode_all(tokenizer, records, cfg["max_length"])
    lengths = [len(x["input_ids"]) for x in encoded]
    torch.manual_seed(0)
    model = _build_model(cfg, model_dir)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    loss_model = ResponseLoss(model)
    compiled = torch.compile(loss_model) if any(v["compile"] for v in variants.values()) \
        else None

    def run_for(spec: dict) -> Callable[[], None]:
        order = epoch_batches(lengths, spec["batch"], 0, 0, cfg["group_by_length"])
        batches = [collate_with_targets([encoded[i] for i in b], tokenizer.pad_token_id)
                   for b in order]
        steps = [batches[i:i + spec["accum"]] for i in range(0, len(batches), spec["accum"])]

        def run() -> None:
            accelerator = fresh_accelerator(spec["precision"])
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
    return runs, {name: min(t) for name, t in times.items()}, sum(lengths), warm_up_s


def _rows(variants: dict[str, dict], best: dict[str, float], tokens: int) -> dict:
    return {name: {**variants[name], "tokens_per_s": tokens / best[name],
                   "ratio_vs_default": best["default"] / best[name]} for name in variants}


def test_lora_step_fp32_settings_vs_default(benchmark, bench_model, bench_source):
    """tokens/s of each variant of the fp32 LoRA step over the default's."""
    cfg = OmegaConf.to_container(compose([]).train)   # the default LoRA settings
    variants = _variants(cfg)
    runs, best, tokens, warm_up_s = _time_variants(cfg, bench_model, bench_source, variants)
    benchmark.pedantic(runs["default"], rounds=1, iterations=1)
    benchmark.extra_info.update({"precision": "fp32", "records": N, "tokens": tokens,
                                 "warm_up_s": warm_up_s,
                                 "variants": _rows(variants, best, tokens)})
    assert all(t > 0 for t in best.values())


def test_lora_step_bf16_vs_fp32_and_the_estimates_probe(benchmark, bench_model, bench_source):
    """bf16 autocast over fp32 for the default LoRA step, and what the estimate's decoder-block
    probe reads on this machine: with the block's weights trained (the probe before) and
    frozen (LoRA's case). The step's ratio is the gain the estimate should predict."""
    composed = OmegaConf.to_container(compose([]))   # the default settings
    default = _variants(composed["train"])["default"]
    variants = {"default": default, "bf16 autocast": {**default, "precision": "bf16"}}
    runs, best, tokens, warm_up_s = _time_variants(composed["train"], bench_model, bench_source,
                                                   variants)
    block = composed["estimate"]["probe_block"]
    probes = {"block, weights trained": bf16_gain(block, backward=True),
              "block, weights frozen": bf16_gain(block, backward=True, frozen=True)}
    benchmark.pedantic(runs["bf16 autocast"], rounds=1, iterations=1)
    benchmark.extra_info.update({"records": N, "tokens": tokens, "warm_up_s": warm_up_s,
                                 "variants": _rows(variants, best, tokens),
                                 "probe_gains": probes})
    assert all(t > 0 for t in best.values()) and all(g > 0 for g in probes.values())
