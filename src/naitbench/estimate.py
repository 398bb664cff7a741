"""`python -m naitbench.estimate`: the expected wall time of `dvc repro` for the profile in
params.yaml, printed before a long run starts (`make repro` does).

The estimate multiplies the work the matrix implies (tokens per pass, models to train and
score) by throughputs measured on the reference machine (`estimate` in conf/config.yaml,
2-core CPU, SmolLM2-135M; the medium profile brings rates for one GPU). For CPU rates a short
probe (a fixed fp32 workload shaped like the model's matrix products and its vocabulary
softmax, a few seconds) is timed on the machine at hand and every reference rate is scaled by
how much faster or slower it ran than on the reference machine, so the printed time is this
machine's, not the reference's. Another model needs its own rates. It counts every stage as
if nothing were cached, so a resumed run finishes sooner.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from naitbench.config import REPO_DIR, subset_names, trained_pairs
from naitbench.data.pool import read_rows
from naitbench.data.records import BadRecordLog

#: which target's held-out set an lm-eval task of the pack scores
TASK_TARGETS = {"nb_humaneval_bpb": "code", "nb_humaneval_pass1": "code",
                "nb_gsm8k_bpb": "math", "nb_gsm8k_em": "math", "nb_mmlu_mc": "knowledge",
                "nb_bbh_mc": "reasoning", "nb_bbh_em": "reasoning",
                "nb_tydiqa_f1": "multilingual"}


def _pool_records(cfg: DictConfig) -> int:
    """The pool size after subsampling: pool.size, else the prepared pool, else the records
    the source holds (read without tokenising; the length policy may drop a few more)."""
    prepared = Path(cfg.paths.data_dir) / "pool" / "pool.jsonl"
    if prepared.exists() and cfg.pool.get("size") is None:
        return sum(1 for _ in prepared.open())
    if cfg.pool.get("size") is not None:
        return int(cfg.pool.size)
    local = cfg.pool.source == "local" and Path(cfg.pool.local_path).exists()
    if local or cfg.pool.source == "package":
        rows, _ = read_rows(cfg.pool, on_bad="skip", log=BadRecordLog(),
                            max_chars=cfg.data.max_chars)
        return len(rows)
    return int(cfg.estimate.hub_pool_records)


def _heldout_items(cfg: DictConfig, target: str) -> int:
    prepared = Path(cfg.paths.data_dir) / "targets" / target / "heldout.jsonl"
    if prepared.exists():
        return sum(1 for _ in prepared.open())
    spec = cfg.targets[target]
    return int(spec.get("heldout_size") or cfg.estimate.default_heldout_items)


PROBE_SHAPE = {"tokens": 512, "hidden": 576, "mlp": 1536, "vocab": 8192}


def probe_seconds(repeats: int = 5) -> float:
    """Best-of-`repeats` time of a fixed fp32 forward and backward pass through an MLP block
    and a vocabulary projection with its log-softmax: the operations that dominate training,
    extraction and scoring of a small causal LM on a CPU."""
    import time

    import torch

    shape = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape["tokens"], shape["hidden"], generator=gen)
    up = torch.randn(shape["hidden"], shape["mlp"], generator=gen, requires_grad=True)
    down = torch.randn(shape["mlp"], shape["hidden"], generator=gen, requires_grad=True)
    head = torch.randn(shape["hidden"], shape["vocab"], generator=gen, requires_grad=True)
    labels = torch.randint(shape["vocab"], (shape["tokens"],), generator=gen)
    best = float("inf")
    for _ in range(repeats + 1):  # the first round warms up allocator and kernels
        start = time.perf_counter()
        for _ in range(4):
            h = x + torch.nn.functional.silu(x @ up) @ down * 0.01
            loss = torch.nn.functional.cross_entropy(h @ head * 0.01, labels)
            loss.backward()
        best = min(best, time.perf_counter() - start)
    return best


def machine_speed(rates: Mapping[str, Any], probe_s: float | None) -> float:
    """How fast this machine is relative to the reference (>1: faster), from the probe; 1.0
    when no probe was run or the reference time is not recorded."""
    reference = rates.get("probe_reference_s")
    if probe_s is None or not reference:
        return 1.0
    return float(reference) / probe_s


def estimate(cfg: DictConfig, speed: float = 1.0) -> dict[str, float]:
    """Seconds per stage group for the whole matrix of `cfg` (a composed config), on a
    machine `speed` times as fast as the reference one."""
    rates: Mapping[str, Any] = cfg.estimate
    tokens = _pool_records(cfg) * rates.tokens_per_record
    runs, start = cfg.runs, rates.stage_startup_s

    def indomain_tokens(names: Any) -> float:
        return sum(cfg.targets[t].get("indomain_size") or rates.default_indomain_items
                   for t in names) * rates.tokens_per_record
    target_tokens = indomain_tokens(runs.targets)
    n_targets, n_ratios = len(runs.targets), len(runs.ratios)
    prompts = len(cfg.selectors.selectit.prompts) * len(cfg.selectors.selectit.models)
    per_stage = {  # recomputed by every (method, target, ratio) stage
        "knn": (tokens + target_tokens) / rates.encoder_tok_s,
        "perplexity": tokens / rates.forward_tok_s,
        "ifd": tokens * rates.ifd_passes / rates.forward_tok_s,
        "selectit": tokens * prompts / rates.rating_tok_s,
    }
    less = cfg.selectors.less  # warmup and gradient features are cached across stages
    once = {"less": less.warmup_epochs * (tokens * (1 + less.warmup_ratio) + target_tokens)
            / rates.grad_tok_s}
    stages = ([(m, n_targets * n_ratios) for m in runs.targeted]
              + [(m, n_ratios) for m in runs.untargeted] + [("random", n_ratios *
                                                              len(runs.random_seeds))])
    select_s = sum(count * (start + per_stage.get(m, 0.0)) + once.get(m, 0.0)
                   for m, count in stages)
    trained = trained_pairs(runs)
    ratio_of = {name: r for r in runs.ratios for name in subset_names(
        runs.targeted, runs.untargeted, runs.targets, [r], runs.random_seeds)}
    subset_tokens = sum(tokens * ratio_of[name] for name, _ in trained)
    full_runs = len(runs.seeds)
    train_s = (subset_tokens * cfg.train.epochs + full_runs * tokens * cfg.train.full_epochs) \
        / rates.train_tok_s + (len(trained) + full_runs) * start
    limit = cfg.eval.get("limit") or float("inf")
    items = sum(min(_heldout_items(cfg, TASK_TARGETS[t]), limit) for t in cfg.eval.tasks)
    models = len(trained) + full_runs + 1
    parts = {
        "prepare (models, data)": rates.prepare_s,
        "features (one pass)": start + (tokens + indomain_tokens(cfg.data.prepared_targets))
        / rates.features_tok_s,
        "select (every method)": select_s,
        "train (LoRA, every subset and seed)": train_s,
        "evaluate (lm-eval, every model)": models * (start + items * rates.eval_s_per_item),
        "report": rates.report_s,
    }
    return {name: seconds / speed for name, seconds in parts.items()}


def render(parts: Mapping[str, float], profile: str, machine: str = "the reference machine",
           speed: float | None = None) -> str:
    total = sum(parts.values())
    where = ("rates in params.yaml `estimate`" if speed is None else
             f"params.yaml `estimate` rates x {speed:.2f}, this machine's probe speed against "
             f"the reference machine")
    lines = [f"Estimated time of `dvc repro` for profile '{profile}' on {machine} (nothing "
             f"cached; {where}):"]
    lines += [f"  {name:<38} {seconds / 60:8.1f} min" for name, seconds in parts.items()]
    lines.append(f"  {'total':<38} {total / 60:8.1f} min ({total / 3600:.1f} h)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m naitbench.estimate")
    parser.add_argument("--params", type=Path, default=REPO_DIR / "params.yaml")
    parser.add_argument("--no-probe", action="store_true",
                        help="skip the speed probe: print the reference machine's times")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.params)
    machine = cfg.estimate.get("machine", "the reference machine")
    speed = None
    if not args.no_probe and cfg.estimate.get("probe_reference_s"):
        probe_s = probe_seconds()
        speed = machine_speed(cfg.estimate, probe_s)
        machine = "this machine"
        print(f"speed probe: {probe_s:.3f} s (reference machine "
              f"{cfg.estimate.probe_reference_s} s)", flush=True)
    print(render(estimate(cfg, speed or 1.0), cfg.profile_name, machine, speed), flush=True)


if __name__ == "__main__":
    main()
