"""What this machine trains and scores per second, measured rather than assumed.

- `train_probe`: LoRA steps (forward, backward, AdamW) of a causal LM shaped like the
  profile's model (`estimate.probe_block`: hidden, MLP, heads, layers, vocabulary), randomly
  initialised, on batches shaped like the pool's records, in the precision training resolves
  to here. It runs the trainer's own pieces (LoRA wrapping, the response-rows loss), so it
  sees what a kernel-level probe misses (attention, norms, the LoRA matmuls, the optimizer).
- `score_probe`: forward passes without gradients of the same LoRA-wrapped model, batches of
  `eval.batch_size`, in the precision scoring uses on the CPU (eval.dtype), as lm-eval's
  log-likelihood requests run them.
- `cells_at_once`: each probe alone with every core, then as two processes at once with
  half the cores each, twice (alone, together, together, alone: one reading of a short
  probe on a shared VM moved by up to 25% between runs minutes apart, BENCHMARKS.md); two
  cells at once are chosen only where together they trained more
  tokens per second than one alone (`make repro`'s CELLS=auto). Scoring's gain is measured
  too, for the estimate: an evaluate cell is short and single-threaded at start-up, so its
  gain differs from training's and from one machine to the next. What was measured is
  written to a JSON file the estimate reads, so the printed estimate uses this machine's
  numbers.

`python -m naitbench.machine cells [--params params.yaml] [--out logs/machine.json]` prints the
chosen count; `python -m naitbench.machine probe --kind train|score --threads N` prints one
probe's rate (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naitbench.cli import reported_errors
from naitbench.scale.job import cell_env

#: two cells at once must train this much faster than one alone to be chosen (noise margin)
MIN_GAIN = 1.05
MACHINE_FILE = Path("logs") / "machine.json"


def probe_model(shape: Mapping[str, int], lora: Mapping[str, Any]) -> Any:
    """A random Llama-shaped causal LM of `shape`, wrapped with the training config's LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape["hidden"], intermediate_size=shape["mlp"],
                         num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"],
                         head_dim=shape["hidden"] // shape["heads"],
                         num_hidden_layers=shape["layers"], vocab_size=shape["vocab"],
                         tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    return get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM"))


def _tokens_per_second(step: Callable[[], None], steps: int, tokens: int) -> float:
    """`tokens` per call of `step`, timed over `steps` calls after one untimed one."""
    step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * tokens / (time.perf_counter() - began)


def train_probe(shape: Mapping[str, int], lora: Mapping[str, Any], precision: str,
                batch: int, length: int, steps: int = 3) -> float:
    """Training tokens per second of `steps` timed micro-batches of `batch` x `length` tokens
    (the second half of each sequence carrying the loss), after one untimed one."""
    import torch

    from naitbench.models.precision import autocast
    from naitbench.train.loop import ResponseLoss

    model = probe_model(shape, lora)
    model.train()
    loss_model = ResponseLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(shape["vocab"], (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    target_index = torch.nonzero((labels[:, 1:] != -100).flatten()).flatten()

    def step() -> None:
        with autocast(precision, "cpu"):
            loss = loss_model(ids, mask, labels, target_index)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _tokens_per_second(step, steps, batch * length)


def score_probe(shape: Mapping[str, int], lora: Mapping[str, Any], precision: str,
                batch: int, length: int, steps: int = 6) -> float:
    """Scored tokens per second of `steps` timed gradient-free forward passes of `batch` x
    `length` tokens with log-softmax over the vocabulary, after one untimed one."""
    import torch

    from naitbench.models.precision import autocast

    model = probe_model(shape, lora)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(shape["vocab"], (batch, length), generator=gen)

    def step() -> None:
        with torch.inference_mode(), autocast(precision, "cpu"):
            torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)

    return _tokens_per_second(step, steps, batch * length)


#: the probes `cells_at_once` runs, by the stage group they time
PROBES = {"train": train_probe, "score": score_probe}


def probe_settings(cfg: Any, kind: str = "train") -> dict[str, Any]:
    """A probe's inputs from a composed config (params.yaml): the model's shape, LoRA,
    the stage's precision and batch, and a record's mean length."""
    from omegaconf import OmegaConf

    from naitbench.evaluate.runner import CPU_PRECISION

    if kind not in PROBES:
        raise ValueError(f"probe kind {kind!r}: use one of {sorted(PROBES)}")
    precision, batch = ((str(cfg.train.precision), int(cfg.train.batch_size)) if kind == "train"
                        else (CPU_PRECISION[str(cfg.eval.dtype)], int(cfg.eval.batch_size)))
    return {"shape": OmegaConf.to_container(cfg.estimate.probe_block, resolve=True),
            "lora": OmegaConf.to_container(cfg.train.lora, resolve=True),
            "precision": precision, "batch": batch,
            "length": int(cfg.estimate.tokens_per_record)}


def _probe_in_subprocesses(params: Path, kind: str, threads: int, count: int) -> list[float]:
    """`count` probes of `kind` started at once, each its own process with `threads` threads."""
    env = cell_env(os.environ, threads, None)   # the thread variables a cell gets
    procs = [subprocess.Popen([sys.executable, "-m", "naitbench.machine", "probe",
                               "--kind", kind, "--params", str(params),
                               "--threads", str(threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    rates = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the {kind} probe failed:\n{err[-2000:]}")
        rates.append(float(json.loads(out.strip().splitlines()[-1])["tok_s"]))
    return rates


def _alone_and_together(params: Path, kind: str, cores: int, repeats: int) -> dict[str, Any]:
    """A probe of `kind` with every core and (two or more cores) two with half each,
    `repeats` times in the order alone, together, together, alone, ... so that a drift of
    the machine's speed during the measurement falls on both sides; the means and each
    reading."""
    alone, together = [], []
    counts = (1, 2) if cores >= 2 else (1,)
    for repeat in range(repeats):
        for count in counts if repeat % 2 == 0 else reversed(counts):
            print(f"{kind} probe {repeat + 1}/{repeats}: "
                  f"{'one alone' if count == 1 else 'two at once'}", file=sys.stderr, flush=True)
            if count == 1:
                alone.append(_probe_in_subprocesses(params, kind, cores, 1)[0])
            else:
                together.append(_probe_in_subprocesses(params, kind, cores // 2, 2))
    mean = sum(alone) / len(alone)
    record: dict[str, Any] = {"alone_tok_s": round(mean, 1),
                              "readings": {"alone": [round(r, 1) for r in alone]}}
    if not together:
        return {**record, "gain": None}
    each = [sum(r[i] for r in together) / len(together) for i in range(2)]
    record["readings"]["together"] = [[round(x, 1) for x in r] for r in together]
    return {**record, "together_tok_s": [round(r, 1) for r in each],
            "gain": round(sum(each) / mean, 3)}


def cells_at_once(params: Path, cores: int | None = None, repeats: int = 2) -> dict[str, Any]:
    """Training's and scoring's probes alone and two at once (`repeats` of each); the count
    chosen (2 only where two training cells together beat one alone by MIN_GAIN) and what
    was measured."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least one measurement")
    cores = cores or os.cpu_count() or 1
    measured = {kind: _alone_and_together(params, kind, cores, repeats) for kind in PROBES}
    gain = measured["train"]["gain"]
    return {"cores": cores, "repeats": repeats, **measured,
            "cells": 2 if gain and gain >= MIN_GAIN else 1}


def read_machine_file(path: Path = MACHINE_FILE) -> dict[str, Any] | None:
    """What `cells` measured on this machine (None when it has not run here, or was written
    by a version that measured other things)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    measured = all(isinstance(record.get(kind), dict) for kind in PROBES)
    return record if measured and record.get("host") == os.uname().nodename else None


def main(argv: Sequence[str] | None = None) -> int:
    with reported_errors():
        from omegaconf import OmegaConf

        from naitbench.config import REPO_DIR
        from naitbench.io import write_json

        parser = argparse.ArgumentParser(prog="python -m naitbench.machine")
        parser.add_argument("what", choices=("cells", "probe"))
        parser.add_argument("--params", type=Path, default=REPO_DIR / "params.yaml")
        parser.add_argument("--kind", choices=sorted(PROBES), default="train",
                            help="probe: the stage group it times")
        parser.add_argument("--threads", type=int, default=None, help="probe: torch threads")
        parser.add_argument("--out", type=Path, default=MACHINE_FILE,
                            help="cells: where the measurement is written for the estimate")
        parser.add_argument("--repeats", type=int, default=2,
                            help="cells: measurements of each probe alone and two at once")
        args = parser.parse_args(argv)
        cfg = OmegaConf.load(args.params)
        if args.what == "probe":
            import torch

            if args.threads:
                torch.set_num_threads(args.threads)
            rate = PROBES[args.kind](**probe_settings(cfg, args.kind))
            print(json.dumps({"tok_s": rate}), flush=True)
            return 0
        record = {**cells_at_once(args.params, repeats=args.repeats),
                  "host": os.uname().nodename,
                  "precision": str(cfg.train.precision)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, record)
        for kind, what in (("train", "training"), ("score", "scoring")):
            m = record[kind]
            together = (f", two at once {sum(m['together_tok_s']):.0f} (x {m['gain']:.2f})"
                        if m["gain"] is not None else "")
            print(f"{what} probe: one cell {m['alone_tok_s']:.0f} tokens/s{together}",
                  file=sys.stderr, flush=True)
        print(f"{record['cells']} cell(s) at once (training's gain decides)", file=sys.stderr,
              flush=True)
        print(record["cells"], flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
