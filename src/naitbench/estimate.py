"""`python -m naitbench.estimate`: the expected wall time of `dvc repro` for the profile in
params.yaml, printed before a long run starts (`make repro` does).

The estimate multiplies the work the matrix implies (tokens per pass, models to train and
score) by throughputs measured on the reference machine (`estimate` in conf/config.yaml,
2-core CPU, SmolLM2-135M); a different machine or model needs its own rates (the medium
profile brings rates for one GPU). It counts every stage as if nothing were cached, so a
resumed run finishes sooner.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from naitbench.config import REPO_DIR
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


def estimate(cfg: DictConfig) -> dict[str, float]:
    """Seconds per stage group for the whole matrix of `cfg` (a composed config)."""
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
    subset_tokens = sum(tokens * r for r in runs.ratios) * (
        len(runs.targeted) * n_targets + len(runs.untargeted) + len(runs.random_seeds))
    seeds = len(runs.seeds)
    train_s = seeds * (subset_tokens * cfg.train.epochs + tokens * cfg.train.full_epochs) \
        / rates.train_tok_s + seeds * (len(runs.subsets) + 1) * start
    limit = cfg.eval.get("limit") or float("inf")
    items = sum(min(_heldout_items(cfg, TASK_TARGETS[t]), limit) for t in cfg.eval.tasks)
    models = seeds * (len(runs.subsets) + 1) + 1
    return {
        "prepare (models, data)": rates.prepare_s,
        "features (one pass)": start + (tokens + indomain_tokens(cfg.data.prepared_targets))
        / rates.features_tok_s,
        "select (every method)": select_s,
        "train (LoRA, every subset and seed)": train_s,
        "evaluate (lm-eval, every model)": models * (start + items * rates.eval_s_per_item),
        "report": rates.report_s,
    }


def render(parts: Mapping[str, float], profile: str, machine: str = "the reference machine") -> str:
    total = sum(parts.values())
    lines = [f"Estimated time of `dvc repro` for profile '{profile}' on {machine} (nothing "
             f"cached, rates in params.yaml `estimate`):"]
    lines += [f"  {name:<38} {seconds / 60:8.1f} min" for name, seconds in parts.items()]
    lines.append(f"  {'total':<38} {total / 60:8.1f} min ({total / 3600:.1f} h)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m naitbench.estimate")
    parser.add_argument("--params", type=Path, default=REPO_DIR / "params.yaml")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.params)
    machine = cfg.estimate.get("machine", "the reference machine")
    print(render(estimate(cfg), cfg.profile_name, machine), flush=True)


if __name__ == "__main__":
    main()
