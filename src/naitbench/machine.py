"""What this machine trains per second, measured rather than assumed.

- `train_probe`: LoRA steps (forward, backward, AdamW) of a causal LM shaped like the
  profile's model (`estimate.probe_block`: hidden, MLP, heads, layers, vocabulary), randomly
  initialised, on batches shaped like the pool's records, in the precision training resolves
  to here. It runs the trainer's own pieces (LoRA wrapping, the response-rows loss), so it
  sees what a kernel-level probe misses (attention, norms, the LoRA matmuls, the optimizer).
- `cells_at_once`: the same probe alone with every core, then as two processes at once with
  half the cores each; two cells at once are chosen only where together they trained more
  tokens per second than one alone (`make repro`'s CELLS=auto). What was measured is written
  to a JSON file the estimate reads, so the printed estimate uses this machine's numbers.

`python -m naitbench.machine cells [--params params.yaml] [--out logs/machine.json]` prints the
chosen count; `python -m naitbench.machine probe --threads N` prints one probe's rate (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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

    step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * length / (time.perf_counter() - began)


def probe_settings(cfg: Any) -> dict[str, Any]:
    """The probe's inputs from a composed config (params.yaml): the model's shape, LoRA,
    precision, micro-batch and a record's mean length."""
    from omegaconf import OmegaConf

    return {"shape": OmegaConf.to_container(cfg.estimate.probe_block, resolve=True),
            "lora": OmegaConf.to_container(cfg.train.lora, resolve=True),
            "precision": str(cfg.train.precision), "batch": int(cfg.train.batch_size),
            "length": int(cfg.estimate.tokens_per_record)}


def _probe_in_subprocesses(params: Path, threads: int, count: int) -> list[float]:
    """`count` probes started at once, each its own process with `threads` threads."""
    env = cell_env(os.environ, threads, None)   # the thread variables a cell gets
    procs = [subprocess.Popen([sys.executable, "-m", "naitbench.machine", "probe",
                               "--params", str(params), "--threads", str(threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    rates = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the training probe failed:\n{err[-2000:]}")
        rates.append(float(json.loads(out.strip().splitlines()[-1])["tok_s"]))
    return rates


def cells_at_once(params: Path, cores: int | None = None) -> dict[str, Any]:
    """The probe alone with every core, then two at once with half each; the count chosen
    (2 only where together beat alone by MIN_GAIN) and what was measured."""
    cores = cores or os.cpu_count() or 1
    alone = _probe_in_subprocesses(params, cores, 1)[0]
    record: dict[str, Any] = {"cores": cores, "alone_tok_s": round(alone, 1)}
    if cores < 2:
        return {**record, "cells": 1, "gain": None}
    together = _probe_in_subprocesses(params, cores // 2, 2)
    gain = sum(together) / alone
    return {**record, "together_tok_s": [round(r, 1) for r in together],
            "gain": round(gain, 3), "cells": 2 if gain >= MIN_GAIN else 1}


def read_machine_file(path: Path = MACHINE_FILE) -> dict[str, Any] | None:
    """What `cells` measured on this machine (None when it has not run here)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("host") == os.uname().nodename else None


def main(argv: Sequence[str] | None = None) -> int:
    with reported_errors():
        from omegaconf import OmegaConf

        from naitbench.config import REPO_DIR
        from naitbench.io import write_json

        parser = argparse.ArgumentParser(prog="python -m naitbench.machine")
        parser.add_argument("what", choices=("cells", "probe"))
        parser.add_argument("--params", type=Path, default=REPO_DIR / "params.yaml")
        parser.add_argument("--threads", type=int, default=None, help="probe: torch threads")
        parser.add_argument("--out", type=Path, default=MACHINE_FILE,
                            help="cells: where the measurement is written for the estimate")
        args = parser.parse_args(argv)
        cfg = OmegaConf.load(args.params)
        if args.what == "probe":
            import torch

            if args.threads:
                torch.set_num_threads(args.threads)
            print(json.dumps({"tok_s": train_probe(**probe_settings(cfg))}), flush=True)
            return 0
        record = {**cells_at_once(args.params), "host": os.uname().nodename,
                  "precision": str(cfg.train.precision)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, record)
        together = (f", two at once {sum(record['together_tok_s']):.0f} tokens/s "
                    f"(x {record['gain']:.2f})" if record["gain"] is not None else "")
        print(f"training probe: one cell {record['alone_tok_s']:.0f} tokens/s{together}: "
              f"{record['cells']} cell(s) at once", file=sys.stderr, flush=True)
        print(record["cells"], flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
