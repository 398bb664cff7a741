"""Scoring benchmarks: K models scored one process each (the DVC stage per model) against one
process with `evaluate_many`; lm-eval batch sizes on the CPU; what forced bf16 autocast
costs in bits per byte; batched scoring on a GPU (skipped without CUDA).

Items per task: NAITBENCH_BENCH_N (conftest), the bits-per-byte tasks of the embedded profile
on the bench data's held-out sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, N

from naitbench.evaluate import Row, evaluate_many
from naitbench.io import read_jsonl

TASKS = ["nb_humaneval_bpb", "nb_gsm8k_bpb"]
K = 3                        # base model + two adapters
BATCH_SIZES = (1, 4, 8, 16)
CURRENT_BATCH = 8            # conf/eval/embedded.yaml before this benchmark


def _cfg(**overrides) -> dict:
    cfg = {"tasks": TASKS, "num_fewshot": {}, "batch_size": CURRENT_BATCH, "limit": N,
           "device": "cpu", "dtype": "float32", "max_gen_toks": None,
           "allow_code_eval": False, "bootstrap_iters": 0}
    return {**cfg, **overrides}


@pytest.fixture(scope="module")
def adapters(bench_model, tmp_path_factory) -> list[Path]:
    """Two LoRA adapters (r=16 on every projection, as conf/train), small random updates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("bench-adapters")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(bench_model), LoraConfig(
            r=16, lora_alpha=32, init_lora_weights=False, target_modules=[
                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if "lora_B" in name:
                    weight.mul_(0.01)
        model.save_pretrained(root / f"lora{seed}")
        out.append(root / f"lora{seed}")
    return out


def _score_in_process(cfg: dict, rows: list[Row], data_dir: Path) -> float:
    """Wall seconds of one fresh Python process scoring `rows` (imports included, as a DVC
    stage pays them)."""
    spec = json.dumps({"cfg": cfg, "data": str(data_dir), "rows": [
        [str(r.model_dir), str(r.out_dir), r.adapter_dir and str(r.adapter_dir)] for r in rows]})
    code = ("import json, sys\nfrom pathlib import Path\n"
            "from naitbench.evaluate import Row, evaluate_many\n"
            "s = json.loads(sys.argv[1])\n"
            "evaluate_many(s['cfg'], [Row(Path(m), Path(o), a and Path(a)) for m, o, a in "
            "s['rows']], data_dir=s['data'])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, spec], check=True, env=env,
                   capture_output=True)
    return time.perf_counter() - began


def test_k_models_separately_vs_together(benchmark, bench_model, bench_source, adapters,
                                         tmp_path):
    """K models as K processes (one DVC stage each) vs one `evaluate_many` process."""
    specs = [None, *adapters]
    alone = [Row(bench_model, tmp_path / "alone" / str(i), a) for i, a in enumerate(specs)]
    together = [Row(bench_model, tmp_path / "together" / str(i), a)
                for i, a in enumerate(specs)]
    separate_s = sum(_score_in_process(_cfg(), [row], bench_source) for row in alone)

    def run_together():
        return _score_in_process(_cfg(), together, bench_source)

    together_s = benchmark.pedantic(run_together, rounds=1, iterations=1)
    diff = max(abs(a["value"] - b["value"])
               for one, many in zip(alone, together, strict=True)
               for a, b in zip(read_jsonl(one.out_dir / "samples.jsonl"),
                               read_jsonl(many.out_dir / "samples.jsonl"), strict=True))
    benchmark.extra_info.update({"models": K, "items_per_task": N, "separate_s": separate_s,
                                 "together_s": together_s,
                                 "together_over_separate": together_s / separate_s,
                                 "max_item_abs_diff": diff})
    assert diff <= 1e-6


def test_batch_size(benchmark, bench_model, bench_source):
    """Loglikelihood scoring time per eval.batch_size on one loaded model (threads as torch
    sets them), as a ratio to the current default; best of 2 interleaved rounds."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from naitbench.evaluate.runner import TASK_DIR, load_task_config

    lm = HFLM(pretrained=str(bench_model), dtype="float32", device="cpu", batch_size=1)
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    tasks = [manager.load([load_task_config(t, bench_source)])["tasks"][t] for t in TASKS]
    times: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}

    def sweep():
        for batch in BATCH_SIZES:
            lm.batch_size_per_gpu = batch   # what HFLM(batch_size=...) sets
            began = time.perf_counter()
            lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=N, bootstrap_iters=0,
                                    task_manager=manager)
            times[batch].append(time.perf_counter() - began)

    benchmark.pedantic(sweep, rounds=2, iterations=1)
    best = {b: min(t) for b, t in times.items()}
    benchmark.extra_info.update({"threads": torch.get_num_threads(), "items_per_task": N,
                                 **{f"batch{b}_s": s for b, s in best.items()},
                                 **{f"batch{b}_over_batch{CURRENT_BATCH}":
                                    s / best[CURRENT_BATCH] for b, s in best.items()}})
    assert all(s > 0 for s in best.values())


def test_bf16_vs_fp32_bits_per_byte(benchmark, bench_model, bench_source, tmp_path):
    """Forced bf16 autocast against fp32 on the base model: bits per byte per task (the
    accuracy bound for eval.dtype=auto is 0.002) and the time ratio."""
    began = time.perf_counter()
    fp32 = evaluate_many(_cfg(), [Row(bench_model, tmp_path / "fp32")],
                         data_dir=bench_source)[0]
    fp32_s = time.perf_counter() - began

    def run_bf16():
        return evaluate_many(_cfg(dtype="bfloat16"), [Row(bench_model, tmp_path / "bf16")],
                             data_dir=bench_source)[0]

    bf16 = benchmark.pedantic(run_bf16, rounds=1, iterations=1)
    diffs = {key: bf16[key] - fp32[key] for key in fp32}
    benchmark.extra_info.update({"items_per_task": N, "fp32": fp32, "bf16": bf16,
                                 "bf16_minus_fp32": diffs,
                                 "max_abs_diff": max(abs(d) for d in diffs.values()),
                                 "bf16_over_fp32_time": benchmark.stats.stats.min / fp32_s})
    assert fp32.keys() == bf16.keys()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batched_scoring(benchmark, bench_model, bench_source, tmp_path):
    """lm-eval scoring on the GPU (weights in eval.dtype=auto): batch 32 against batch 1,
    after a warm-up run (CUDA initialisation)."""
    def run(batch: int) -> None:
        evaluate_many(_cfg(device="cuda", dtype="auto", batch_size=batch),
                      [Row(bench_model, tmp_path / str(batch))], data_dir=bench_source)

    run(32)
    began = time.perf_counter()
    run(1)
    batch1_s = time.perf_counter() - began
    benchmark.pedantic(run, args=(32,), rounds=1, iterations=1)
    benchmark.extra_info.update({"items_per_task": N, "batch1_s": batch1_s,
                                 "batch32_over_batch1": benchmark.stats.stats.min / batch1_s})
    assert batch1_s > 0
