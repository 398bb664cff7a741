"""`python -m naitbench.estimate`: the expected wall time of `dvc repro` for the profile in the
working directory's params.yaml, printed before a long run starts (`make repro` does).

The estimate multiplies the work the matrix implies by throughputs measured with the profile's
model (`estimate` in conf/config.yaml, `estimate.model`): tokens per arm from the pool (the
prepared pool's token counts, else the source's character lengths scaled to
`tokens_per_record`, so the length arm's long records count as long), models to train and
held-out items to score as the targets define them (`heldout_size: null` is every remaining
item).

Which rates apply depends on the machine. On a GPU: the `estimate.gpu` entry whose name is part
of the device's name (rates measured on that GPU), or a message that there are none for this
GPU and model. On a CPU: the reference CPU's fp32 rates, scaled by a speed probe (a fixed fp32
workload shaped like the model's matrix products and its vocabulary softmax, timed against the
reference machine), and for each stage that runs in bf16 here (what `precision: auto`
resolves to on this CPU: features, the selectors' own passes) by the bf16 gain of a decoder
block shaped like the model (`probe_block`, timed in fp32 and in bf16 on this machine:
forward for extraction, ratings and losses, forward and backward for LESS's gradients, the
block's weights frozen under LoRA). Training is timed by the training probe instead
(naitbench.machine: LoRA steps of a random model with the model's every layer and vocabulary,
in training's precision, absolute tokens per second on this machine, times
`train_probe_efficiency`), taken from `logs/machine.json` when `make repro` measured it here.
Two cells at once divide train and evaluate by the gains naitbench.machine measured here
(its training and scoring probes, each alone and two at once), else `estimate.cells_gain`.
It counts every stage as if nothing were cached, so a resumed run finishes sooner.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from naitbench.cli import reported_errors
from naitbench.config import REPO_DIR, selection_draws, subset_names, trained_pairs
from naitbench.data.pool import read_rows, subsample
from naitbench.data.records import BadRecordLog
from naitbench.data.template import CHAT, format_prompt
from naitbench.errors import ConfigError, UserError
from naitbench.evaluate.runner import generic_task
from naitbench.machine import MACHINE_FILE, read_machine_file

#: which target's held-out set an lm-eval task of the pack scores
TASK_TARGETS = {"nb_humaneval_bpb": "code", "nb_humaneval_pass1": "code",
                "nb_gsm8k_bpb": "math", "nb_gsm8k_em": "math", "nb_mmlu_mc": "knowledge",
                "nb_bbh_mc": "reasoning", "nb_bbh_em": "reasoning",
                "nb_tydiqa_f1": "multilingual"}


def task_target(task: str) -> str | None:
    """The target whose held-out set `task` scores: the pack's table, or the target named in
    a generic target's task (nb_<target>_bpb, nb_<target>_em); None for an unknown task."""
    found = generic_task(task)
    return TASK_TARGETS.get(task) or (found[0] if found else None)


#: machine-dependent rates: a GPU entry of `estimate.gpu` must give every one
RATE_KEYS = ("stage_startup_s", "prepare_s", "features_tok_s", "forward_tok_s",
             "rating_tok_s", "encoder_tok_s", "grad_tok_s", "train_tok_s", "eval_s_per_item",
             "report_s")
PREPARE, FEATURES = "prepare (models, data)", "features (one pass)"
SELECT, SELECT_GRADS = "select (every other method)", "select (LESS warmup, gradients)"
TRAIN, EVALUATE, REPORT = ("train (LoRA, every subset and seed)",
                           "evaluate (lm-eval, every model)", "report")
PARTS = (PREPARE, FEATURES, SELECT, SELECT_GRADS, TRAIN, EVALUATE, REPORT)
#: stage groups that train or take gradients (their bf16 gain is forward and backward's)
BACKWARD = (TRAIN, SELECT_GRADS)


class NoRates(UserError, LookupError):
    """The profile's rates were not measured for this machine or this model."""


def pool_lengths(cfg: DictConfig) -> list[tuple[float, float]] | None:
    """(prompt, response) tokens of every pool record: the prepared pool's counts, else the
    source's character lengths scaled so that their mean, cut at train.max_length, is
    `tokens_per_record` (after the de-duplication and `pool.size` sample prepare_data makes);
    None when the source cannot be read here (the hub without a local copy)."""
    prepared = Path(cfg.paths.data_dir) / "pool" / "pool.jsonl"
    if prepared.exists():
        from naitbench.io import read_jsonl

        return [(r["n_prompt_tokens"], r["n_response_tokens"]) for r in read_jsonl(prepared)]
    local = cfg.pool.source == "local" and Path(cfg.pool.local_path).exists()
    if not (local or cfg.pool.source == "package"):
        return None
    rows, _ = read_rows(cfg.pool, on_bad="skip", log=BadRecordLog(),
                        max_chars=cfg.data.max_chars)
    unique = list({(r["instruction"], r.get("input") or "", r["output"]): None
                   for _, r in rows})
    unique = subsample(unique, cfg.pool.get("size"), cfg.pool.get("seed", 0))
    chars = [(len(format_prompt(i, x, _fixed_text(cfg.pool.template))), len(o))
             for i, x, o in unique]
    scale = _scale_to_mean([p + r for p, r in chars], cfg.estimate.tokens_per_record,
                           cfg.train.max_length)
    return [(p * scale, r * scale) for p, r in chars]


def _fixed_text(template: str) -> str:
    """The format the estimate renders prompts in: a chat template needs the model's
    tokenizer, so `plain` stands in for it (lengths are rescaled to tokens_per_record)."""
    return "plain" if template == CHAT else template


def _scale_to_mean(sizes: list[int], mean: float, cap: int) -> float:
    """The factor that gives `sizes` the mean `mean` once each is cut at `cap` tokens
    (`tokens_per_record` is the mean of records as trained), found by bisection."""
    low, high = 0.0, 1.0
    while sum(min(s * high, cap) for s in sizes) < mean * len(sizes) and high < 1e6:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if sum(min(s * mid, cap) for s in sizes) < mean * len(sizes) \
            else (low, mid)
    return (low + high) / 2


def _scored_target(cfg: DictConfig, task: str) -> str:
    target = task_target(task)
    if target is None or target not in cfg.targets:
        raise ConfigError(f"eval.tasks names {task!r}, which scores no configured target "
                            f"(targets: {sorted(cfg.targets)}; pack: {sorted(TASK_TARGETS)})")
    return target


def heldout_items(cfg: DictConfig, target: str) -> int:
    """Items a task of `target` scores: the prepared held-out set, else `heldout_size`, else
    (null: every item the in-domain set leaves) the count of a build of the target from its
    local source; `default_heldout_items` only for a null size on a source not readable here."""
    prepared = Path(cfg.paths.data_dir) / "targets" / target / "heldout.jsonl"
    if prepared.exists():
        return sum(1 for _ in prepared.open())
    spec = cfg.targets[target]
    if spec.get("heldout_size") is not None:
        return int(spec.heldout_size)
    if spec.get("source") != "local":
        return int(cfg.estimate.default_heldout_items)
    from naitbench.data.targets import build_target

    _, heldout, _ = build_target(target, spec, _fixed_text(cfg.pool.template), on_bad="skip",
                                 log=BadRecordLog(), max_chars=cfg.data.max_chars)
    return len(heldout)


def arm_tokens(cfg: DictConfig, lengths: list[tuple[float, float]] | None, name: str,
               ratio: float) -> float:
    """Training tokens per epoch of one subset: the length arm's longest responses, the
    subset file when it exists, else `ratio` of the pool's (records cut at train.max_length)."""
    cap = cfg.train.max_length
    if lengths is None:
        return ratio * cfg.estimate.hub_pool_records * cfg.estimate.tokens_per_record
    totals = [min(p + r, cap) for p, r in lengths]
    keep = max(1, round(ratio * len(lengths)))
    if name.startswith("length-"):
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i][1])
        return sum(totals[i] for i in order[:keep])
    return sum(totals) * keep / len(totals)


def estimate(cfg: DictConfig, speed: float | Mapping[str, float] = 1.0,
             cells: int = 1, train_precision: str = "fp32",
             cells_gains: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """Seconds per stage group for the whole matrix of `cfg` (a composed config), on a
    machine `speed` times as fast as the one the rates were measured on (one factor, or one
    per stage group); `cells` train and evaluate cells at once (`make repro CELLS=2`) divide
    those stages by their gain of two cells at once: `cells_gains[TRAIN]` and
    `cells_gains[EVALUATE]` where this machine measured them (naitbench.machine), else
    `estimate.cells_gain` (training's for `train_precision`)."""
    rates: Mapping[str, Any] = cfg.estimate
    lengths = pool_lengths(cfg)
    n_pool = len(lengths) if lengths is not None else int(rates.hub_pool_records)
    tokens = (sum(min(p + r, cfg.features.max_length) for p, r in lengths)
              if lengths is not None else n_pool * rates.tokens_per_record)
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
    draws = selection_draws(runs)
    stages = ([(m, n_targets * n_ratios * len(draws.get(m, [0]))) for m in runs.targeted]
              + [(m, n_ratios) for m in runs.untargeted] + [("random", n_ratios *
                                                              len(runs.random_seeds))])
    # a rule arm `<representation>+<rule>` costs what its representation costs; LESS's
    # warmup and gradients are paid once whatever the rules
    select_s = sum(count * (start + per_stage.get(m.partition("+")[0], 0.0))
                   for m, count in stages)
    grads_s = sum(once.get(m, 0.0) for m in {m.partition("+")[0] for m, _ in stages})
    trained = trained_pairs(runs)
    ratio_of = {name: r for r in runs.ratios for name in subset_names(
        runs.targeted, runs.untargeted, runs.targets, [r], runs.random_seeds, draws)}
    subset_tokens = sum(arm_tokens(cfg, lengths, name, ratio_of[name]) for name, _ in trained)
    full_runs = len(runs.seeds)
    full_tokens = arm_tokens(cfg, lengths, "full", 1.0)
    train_s = (subset_tokens * cfg.train.epochs + full_runs * full_tokens * cfg.train.full_epochs) \
        / rates.train_tok_s + (len(trained) + full_runs) * start
    limit = cfg.eval.get("limit") or float("inf")
    items = sum(min(heldout_items(cfg, _scored_target(cfg, t)), limit) for t in cfg.eval.tasks)
    models = len(trained) + full_runs + 1
    parts = {
        PREPARE: rates.prepare_s,
        FEATURES: start + (tokens + indomain_tokens(cfg.data.prepared_targets))
        / rates.features_tok_s,
        SELECT: select_s,
        SELECT_GRADS: grads_s,
        TRAIN: train_s,
        EVALUATE: models * (start + items * rates.eval_s_per_item),
        REPORT: rates.report_s,
    }
    factor = speed if isinstance(speed, Mapping) else dict.fromkeys(parts, speed)
    out = {name: seconds / factor[name] for name, seconds in parts.items()}
    if cells > 1:
        gains = rates.get("cells_gain") or {}
        if int(gains.get("cells", 0)) != cells:
            raise NoRates(f"estimate.cells_gain was measured with {gains.get('cells')} cells at "
                          f"once, not {cells}: measure it (make bench) for this count")
        measured = cells_gains or {}
        if measured.get(TRAIN) is None and train_precision not in gains.train:
            raise NoRates(f"estimate.cells_gain.train has no gain measured for "
                          f"{train_precision} training: {sorted(gains.train)}")
        out[TRAIN] /= float(measured.get(TRAIN) or gains.train[train_precision])
        out[EVALUATE] /= float(measured.get(EVALUATE) or gains.evaluate)
    return out


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


def bf16_gain(block: Mapping[str, int], backward: bool, repeats: int = 5,
              frozen: bool = False) -> float:
    """How much faster a Llama decoder block shaped like the model (`block`: hidden, mlp,
    heads, kv_heads, tokens) runs under bf16 autocast than in fp32 on this CPU: forward only,
    or forward and backward (training); `frozen`: the block's weights take no gradient, as
    under LoRA, so the backward pass computes only the input's gradient. Matrix products
    alone overstate it (they gain about 2.4x where a block gains 1.8x forward, 1.5x with
    backward on a native-bf16 EPYC). The two are timed back to back and the median of
    `repeats` such ratios taken, so a burst of load from other jobs moves one ratio, not the
    result."""
    import time

    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=block["hidden"], intermediate_size=block["mlp"],
                         num_attention_heads=block["heads"],
                         num_key_value_heads=block["kv_heads"],
                         head_dim=block["hidden"] // block["heads"])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(config, 0).requires_grad_(not frozen)
    length = 256
    x = torch.randn(max(1, block["tokens"] // length), length, block["hidden"])
    rope = LlamaRotaryEmbedding(config)(x, torch.arange(length)[None])

    def seconds(bf16: bool) -> float:
        start = time.perf_counter()
        for _ in range(3):
            with torch.set_grad_enabled(backward), torch.autocast("cpu", enabled=bf16,
                                                                 dtype=torch.bfloat16):
                out = layer(x.clone().requires_grad_(backward), position_embeddings=rope,
                            attention_mask=None)
                out = out[0] if isinstance(out, tuple) else out
            if backward:
                out.float().sum().backward()
        return time.perf_counter() - start

    seconds(False), seconds(True)   # warm-up: allocator, oneDNN kernels of both precisions
    return statistics.median(seconds(False) / seconds(True) for _ in range(repeats))


def machine_speed(rates: Mapping[str, Any], probe_s: float | None) -> float:
    """How fast this machine is relative to the reference (>1: faster), from the probe; 1.0
    when no probe was run or the reference time is not recorded."""
    reference = rates.get("probe_reference_s")
    if probe_s is None or not reference:
        return 1.0
    return float(reference) / probe_s


def cpu_precisions(cfg: DictConfig) -> dict[str, str]:
    """The precision each stage group computes in on this CPU, as the stages resolve it
    (training, extraction and the selectors' own passes: `auto` is bf16 on native-bf16
    CPUs; scoring keeps fp32 unless eval.dtype=bfloat16; the rest runs in fp32)."""
    from naitbench.evaluate.runner import CPU_PRECISION
    from naitbench.models.precision import PRECISION_NAMES, resolve_autocast

    def resolved(name: str) -> str:
        name = {"no": "fp32"}.get(name, name)
        return "fp32" if name == "fp16" else PRECISION_NAMES[resolve_autocast(name, "cpu")]
    out = dict.fromkeys((PREPARE, REPORT), "fp32")
    selection = resolved(cfg.select.get("precision", "auto"))
    out.update({FEATURES: resolved(cfg.features.get("precision", "auto")),
                SELECT: selection, SELECT_GRADS: selection,
                TRAIN: resolved(cfg.train.precision),
                EVALUATE: resolved(CPU_PRECISION.get(cfg.eval.dtype, "fp32"))})
    return out


@dataclass
class Plan:
    """Which rates apply on this machine and how fast it runs each stage group."""

    rates: dict
    machine: str
    speed: dict[str, float]
    precision: dict[str, str]
    notes: list[str] = field(default_factory=list)
    #: two cells at once against one, by stage group (TRAIN, EVALUATE), as measured here
    #: (empty: not measured)
    cells_gains: dict[str, float | None] = field(default_factory=dict)


def gpu_rates(cfg: DictConfig, device_name: str) -> dict:
    """The `estimate.gpu` entry whose key is part of `device_name` (every rate given)."""
    for key, entry in (cfg.estimate.get("gpu") or {}).items():
        if str(key).lower() in device_name.lower():
            missing = [k for k in RATE_KEYS if k not in entry]
            if missing:
                raise NoRates(f"estimate.gpu.{key} lacks {missing}: give every rate measured "
                              f"on that GPU")
            return {**OmegaConf.to_container(cfg.estimate), **entry}
    raise NoRates(f"no rates for this GPU ({device_name}) and model {cfg.model.name}: "
                  f"estimate.gpu has {sorted(cfg.estimate.get('gpu') or {}) or 'none'}; time a "
                  f"short run and add them to the profile")


def plan(cfg: DictConfig, probe: bool = True,
         machine_record: Mapping[str, Any] | None = None) -> Plan:
    """The rates, speeds and precisions for this machine (see the module doc);
    `machine_record`: what naitbench.machine measured here (the training probe)."""
    import torch

    measured = cfg.estimate.get("model")
    if measured and measured != cfg.model.name:
        raise NoRates(f"no rates for model {cfg.model.name}: the profile's `estimate` rates "
                      f"were measured with {measured}; time a short run and add its own")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        gpu = gpu_rates(cfg, name)
        return Plan(gpu, f"this GPU ({name}; rates measured on it)", dict.fromkeys(PARTS, 1.0),
                    {})
    rates = OmegaConf.to_container(cfg.estimate)
    precision = cpu_precisions(cfg)
    if not probe or not cfg.estimate.get("probe_reference_s"):
        return Plan(rates, cfg.estimate.get("machine", "the reference machine"),
                    dict.fromkeys(precision, 1.0), dict.fromkeys(precision, "fp32"))
    probe_s = probe_seconds()
    fp32 = machine_speed(cfg.estimate, probe_s)
    notes = [f"speed probe: {probe_s:.3f} s fp32 (reference machine "
             f"{cfg.estimate.probe_reference_s} s): x {fp32:.2f}"]
    gains = {}
    # training is timed by the training probe below, so its block gain is not needed
    blocks = {part: p for part, p in precision.items() if part != TRAIN}
    for backward in sorted({part in BACKWARD for part, p in blocks.items() if p == "bf16"}):
        gains[backward] = bf16_gain(cfg.estimate.probe_block, backward,
                                    frozen=backward and cfg.train.method == "lora")
        kind = "forward and backward" if backward else "forward"
        notes.append(f"bf16 gain of a decoder block ({kind}) here: x {gains[backward]:.2f}")
    speed = {part: fp32 * (gains[part in BACKWARD] if p == "bf16" else 1.0)
             for part, p in blocks.items()}
    trained, cells_gains, how = training_rate(cfg, machine_record)
    speed[TRAIN] = trained * float(cfg.estimate.get("train_probe_efficiency", 1.0)) \
        / float(cfg.estimate.train_tok_s)
    notes.append(f"training probe ({how}): {trained:.0f} tokens/s, x "
                 f"{cfg.estimate.get('train_probe_efficiency', 1.0)} trainer efficiency")
    return Plan(rates, "this machine", speed, precision, notes, cells_gains)


def training_rate(cfg: DictConfig, machine_record: Mapping[str, Any] | None,
                  ) -> tuple[float, dict[str, float | None], str]:
    """This machine's training tokens/s (one cell, every core) and the measured gains of two
    cells at once for training and scoring: from `python -m naitbench.machine cells` when it
    ran here for this precision, else a probe run now (no gains)."""
    if machine_record and machine_record.get("precision") == str(cfg.train.precision):
        return (float(machine_record["train"]["alone_tok_s"]),
                {TRAIN: machine_record["train"].get("gain"),
                 EVALUATE: machine_record["score"].get("gain")},
                "naitbench.machine, measured before this run")
    from naitbench.machine import probe_settings, train_probe

    return train_probe(**probe_settings(cfg)), {}, "run now"


def render(parts: Mapping[str, float], profile: str, machine: str = "the reference machine",
           speed: float | Mapping[str, float] | None = None,
           precision: Mapping[str, str] | None = None) -> str:
    total = sum(parts.values())
    where = ("rates in params.yaml `estimate`" if speed is None else
             "params.yaml `estimate` rates x this machine's speed against the machine they "
             "were measured on")
    lines = [f"Estimated time of `dvc repro` for profile '{profile}' on {machine} (nothing "
             f"cached; {where}):"]
    for name, seconds in parts.items():
        factor = speed.get(name) if isinstance(speed, Mapping) else speed
        how = ", ".join(x for x in ((precision or {}).get(name),
                                    f"x {factor:.2f}" if factor is not None else None) if x)
        lines.append(f"  {name:<38} {seconds / 60:8.1f} min" + (f"  ({how})" if how else ""))
    lines.append(f"  {'total':<38} {total / 60:8.1f} min ({total / 3600:.1f} h)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    with reported_errors():
        parser = argparse.ArgumentParser(prog="python -m naitbench.estimate")
        parser.add_argument("--params", type=Path, default=REPO_DIR / "params.yaml",
                            help="default: params.yaml of the checkout in the working directory")
        parser.add_argument("--no-probe", action="store_true",
                            help="skip the speed probe: print the reference machine's times")
        parser.add_argument("--cells", type=int, default=1,
                            help="train and evaluate cells run at once (make repro's CELLS)")
        parser.add_argument("--machine", type=Path, default=MACHINE_FILE,
                            help="what `python -m naitbench.machine cells` measured here")
        args = parser.parse_args(argv)
        cfg = OmegaConf.load(args.params)
        try:
            here = plan(cfg, probe=not args.no_probe,
                        machine_record=read_machine_file(args.machine))
            parts = estimate(OmegaConf.merge(cfg, {"estimate": here.rates}), here.speed,
                             args.cells, here.precision.get(TRAIN, "fp32"), here.cells_gains)
        except NoRates as error:
            print(f"No estimate for profile '{cfg.profile_name}': {error}", flush=True)
            return
        for note in here.notes:
            print(note, flush=True)
        speed = None if here.machine != "this machine" else here.speed
        if args.cells > 1:
            source = {part: "measured here" if here.cells_gains.get(part) else
                      "estimate.cells_gain" for part in (TRAIN, EVALUATE)}
            print(f"train and evaluate: {args.cells} cells at once (gain of training "
                  f"{source[TRAIN]}, of scoring {source[EVALUATE]})", flush=True)
        print(render(parts, cfg.profile_name, here.machine, speed, here.precision), flush=True)


if __name__ == "__main__":
    main()
