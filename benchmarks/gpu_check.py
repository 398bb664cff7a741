"""One-call GPU check: the GPU rows of BENCHMARKS.md and a short slice of the medium profile's
select and train steps, for the few minutes a GPU is lent.

Needs only torch, transformers, peft, accelerate, numpy, tqdm, safetensors: it imports the
project's capture, pooling, NAIT library and encoding modules and the trainer's response-only
loss and batching (`naitbench.train.loop`; none of these imports omegaconf, hydra, dvc,
lm-eval, datasets, wandb or gguf at import time). Each result is appended to `--out` (JSON
lines) the moment it exists; no step starts unless its estimated time fits before the
deadline. benchmarks/README.md says what to carry onto the GPU machine.

    python benchmarks/gpu_check.py --model <dir> --pool <pool.jsonl> --target <indomain.jsonl>
    python benchmarks/gpu_check.py --dry ...     # CPU, tiny sizes (tests/test_gpu_check.py)

`--model` may hold weights (loaded) or only config.json and the tokenizer: then the weights
are drawn at random from the config, which times the same computation (rows say which).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from naitbench.data.encoding import IGNORE_INDEX, encode
from naitbench.features.capture import capture_batch, collate, length_batches, parse_specs
from naitbench.models.load import load_tokenizer
from naitbench.nait.library import build_library, score_pool
from naitbench.train.loop import ResponseLoss, collate_with_targets

SPECS = parse_specs(["mlp.mean", "final.weighted"])   # the features stage's defaults
# (batch, max_length, records or batches) per row: a GPU's sizes, and the dry run's
SIZES = {"gpu": {"train": (16, 512, 8), "extract": (64, 512, 512), "score": (32, 512, 128),
                 "slice": (64, 512, 2000), "slice_train": (16, 512, 1)},
         "dry": {"train": (2, 64, 2), "extract": (4, 64, 8), "score": (4, 64, 8),
                 "slice": (4, 64, 16), "slice_train": (2, 64, 1)}}


class Report:
    """Appends one JSON line per result and flushes it to disk at once."""

    def __init__(self, path: Path, deadline: float):
        self.path, self.deadline = path, deadline
        path.parent.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as stream:
            stream.write(json.dumps(row) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        print(json.dumps(row), flush=True)

    def fits(self, name: str, need_s: float) -> bool:
        """Whether a step estimated at `need_s` can finish before the deadline (else logged)."""
        if self.left() > need_s:
            return True
        self.write({"row": name, "skipped": f"needs about {need_s:.0f} s, {self.left():.0f} s "
                                            f"left before the deadline"})
        return False


def load(model_dir: Path, device: str, dtype: torch.dtype) -> tuple[Any, str]:
    """The model (weights if present, else drawn from config.json) and which it was."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if any(model_dir.glob("*.safetensors")):
        model, weights = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype), \
            "loaded"
    else:
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(str(model_dir))
        model, weights = AutoModelForCausalLM.from_config(config, dtype=dtype), "random"
    return model.to(device).eval(), weights


def encode_cut(tokenizer: Any, record: dict, max_length: int) -> dict:
    """The features stage's encoding: cut to `max_length` keeping a response token."""
    encoded = encode(tokenizer, record["prompt"], record["response"])
    head = {k: v[:max_length] for k, v in encoded.items()}
    if any(label != IGNORE_INDEX for label in head["labels"]):
        return head
    return {k: v[-max_length:] for k, v in encoded.items()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    began = time.perf_counter()
    out = run()
    sync(device)
    return time.perf_counter() - began, out


def batches_of(encoded: Sequence[dict], batch: int, pad: int, device: str) -> list[tuple]:
    return [collate([encoded[i] for i in b], pad, device)
            for b in length_batches([len(e["input_ids"]) for e in encoded], batch)]


def extract(model: Any, batches: Sequence[tuple], autocast: Callable) -> dict[str, np.ndarray]:
    """The features pass over `batches`: {spec: [n, layers, d]} (length-sorted order)."""
    out: dict[str, list] = {s.name: [] for s in SPECS}
    with autocast():
        for ids, real, response in batches:
            for name, value in capture_batch(model, ids, real, response, SPECS).items():
                out[name].append(value.float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def full_forward(model: Any, batches: Sequence[tuple], autocast: Callable) -> None:
    with torch.no_grad(), autocast():
        for ids, real, _ in batches:
            model(input_ids=ids, attention_mask=real, use_cache=False)


def response_logprob(model: Any, batches: Sequence[tuple], autocast: Callable) -> list[float]:
    """Summed log-probability of each item's response (loglikelihood scoring)."""
    out = []
    with torch.no_grad(), autocast():
        for ids, real, response in batches:
            logp = model(input_ids=ids, attention_mask=real, use_cache=False).logits[:, :-1]
            logp = torch.log_softmax(logp.float(), dim=-1)
            token = logp.gather(-1, ids[:, 1:, None])[..., 0]
            out += (token * response[:, 1:]).sum(dim=1).tolist()
    return out


def lora_model(model: Any) -> Any:
    """LoRA r=16 on every projection (conf/train/lora.yaml)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))


def train_step(model: Any, optimizer: Any, batch: dict, autocast: Callable) -> torch.Tensor:
    """The trainer's step: its `ResponseLoss` (body forward, LM head on labelled positions
    only, fp32 cross-entropy), as a mean over the batch's response tokens."""
    model.train()
    with autocast():
        loss = ResponseLoss(model)(**batch) / batch["target_index"].numel()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def train_batches(encoded: Sequence[dict], batch: int, pad: int, device: str) -> list[dict]:
    """Length-grouped batches collated as the trainer collates them, on `device`."""
    return [{k: v.to(device) for k, v in
             collate_with_targets([encoded[i] for i in b], pad_id=pad).items()}
            for b in length_batches([len(e["input_ids"]) for e in encoded], batch)]


def train_rate(model: Any, batches: Sequence[dict], autocast: Callable, device: str,
               epochs: int = 1) -> dict[str, float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    train_step(model, optimizer, batches[0], autocast)   # warm-up, not timed

    def run() -> list[float]:
        losses = [train_step(model, optimizer, b, autocast)
                  for _ in range(epochs) for b in batches]
        return torch.stack(losses).tolist()   # one read-back, as the trainer's log entry

    seconds, losses = timed(run, device)
    tokens = epochs * sum(int(b["attention_mask"].sum()) for b in batches)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
            "final_loss": losses[-1]}


def check(args: argparse.Namespace) -> None:
    began = time.monotonic()
    report = Report(args.out, began + args.budget_s)
    device = "cpu" if args.dry else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry for the CPU dry run")
    dtype = torch.float32 if args.dry else torch.bfloat16
    sizes = SIZES["dry" if args.dry else "gpu"]

    def autocast() -> Any:
        return torch.autocast(device, dtype=torch.bfloat16, enabled=not args.dry)

    tokenizer = load_tokenizer(args.model)
    pool = [json.loads(line) for line in args.pool.read_text().splitlines() if line.strip()]
    target = [json.loads(line) for line in args.target.read_text().splitlines() if line.strip()]
    seconds, (model, weights) = timed(lambda: load(args.model, device, dtype), device)
    report.write({"row": "setup", "device": torch.cuda.get_device_name() if device == "cuda"
                  else "cpu (dry run)", "torch": torch.__version__, "weights": weights,
                  "dtype": str(dtype), "pool_records": len(pool), "load_s": round(seconds, 2)})
    pad = tokenizer.pad_token_id

    batch, length, n = sizes["extract"]
    if report.fits("extraction_vs_full_forward", 60):
        batches = batches_of([encode_cut(tokenizer, r, length) for r in pool[:n]], batch, pad,
                             device)
        tokens = sum(int(b[1].sum()) for b in batches)
        extract(model, batches[:1], autocast)   # warm-up
        t_extract, _ = timed(lambda: extract(model, batches, autocast), device)
        t_forward, _ = timed(lambda: full_forward(model, batches, autocast), device)
        report.write({"row": "extraction_vs_full_forward", "records": len(pool[:n]),
                      "batch": batch, "max_length": length, "tokens": tokens,
                      "extraction_tok_s": tokens / t_extract, "forward_tok_s": tokens / t_forward,
                      "ratio": t_forward / t_extract})

    batch, length, n = sizes["score"]
    if report.fits("batched_scoring", 60):
        items = [encode_cut(tokenizer, r, length) for r in target[:n]]
        single = batches_of(items, 1, pad, device)
        batched = batches_of(items, batch, pad, device)
        t_one, by_one = timed(lambda: response_logprob(model, single, autocast), device)
        t_many, by_many = timed(lambda: response_logprob(model, batched, autocast), device)
        order = [i for b in length_batches([len(e["input_ids"]) for e in items], 1) for i in b]
        batched_order = [i for b in length_batches([len(e["input_ids"]) for e in items], batch)
                         for i in b]
        one = dict(zip(order, by_one, strict=True))
        many = dict(zip(batched_order, by_many, strict=True))
        report.write({"row": "batched_scoring", "items": len(items), "batch": batch,
                      "batch1_s": round(t_one, 3), "batched_s": round(t_many, 3),
                      "speedup": t_one / t_many,
                      "max_abs_logprob_difference": max(abs(one[i] - many[i]) for i in one)})

    batch, length, steps = sizes["train"]
    if report.fits("lora_training", 90):
        peft_model = lora_model(model)
        encoded = [encode_cut(tokenizer, r, length) for r in pool[:batch * (steps + 1)]]
        batches = train_batches(encoded, batch, pad, device)
        report.write({"row": "lora_training", "batch": batch, "max_length": length,
                      **train_rate(peft_model, batches, autocast, device)})
        model = peft_model.unload()   # the plain model again for the slice

    batch, length, n = sizes["slice"]
    if report.fits("medium_slice_select", 120):
        pool_slice = pool[:n]
        t_encode, encoded = timed(lambda: [encode_cut(tokenizer, r, length) for r in pool_slice],
                                  device)
        batches = batches_of(encoded, batch, pad, device)
        t_pool, pool_features = timed(lambda: extract(model, batches, autocast), device)
        target_batches = batches_of([encode_cut(tokenizer, r, length) for r in target], batch,
                                    pad, device)
        t_target, target_features = timed(lambda: extract(model, target_batches, autocast),
                                          device)
        layers = list(range(pool_features["mlp.mean"].shape[1]))
        t_score, scores = timed(lambda: score_pool(build_library(
            pool_features["mlp.mean"], target_features["mlp.mean"], layers, k=4),
            pool_features["mlp.mean"]), device)
        order = [i for b in length_batches([len(e["input_ids"]) for e in encoded], batch)
                 for i in b]
        keep = max(1, len(order) // 10)
        chosen = [order[i] for i in np.argsort(-scores, kind="stable")[:keep]]
        tokens = sum(len(e["input_ids"]) for e in encoded)
        report.write({"row": "medium_slice_select", "records": len(pool_slice), "tokens": tokens,
                      "encode_s": round(t_encode, 2), "pool_extraction_s": round(t_pool, 2),
                      "extraction_tok_s": tokens / t_pool, "target_records": len(target),
                      "target_extraction_s": round(t_target, 2),
                      "nait_library_and_scoring_s": round(t_score, 3), "selected": len(chosen)})
        batch, length, epochs = sizes["slice_train"]
        subset = [encoded[i] for i in chosen]
        if report.fits("medium_slice_train", 30 + len(subset) * length / 10_000):
            report.write({"row": "medium_slice_train", "records": len(subset), "batch": batch,
                          "epochs": epochs, **train_rate(lora_model(model), train_batches(
                              subset, batch, pad, device), autocast, device, epochs)})
    report.write({"row": "done", "wall_s": round(time.monotonic() - began, 1)})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="model dir (weights, or config.json + tokenizer only)")
    parser.add_argument("--pool", type=Path, required=True, help="a prepared pool.jsonl")
    parser.add_argument("--target", type=Path, required=True, help="a target's indomain.jsonl")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) /
                        "gpu_check.jsonl")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="no step starts unless it fits before this many seconds")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes, fp32")
    check(parser.parse_args(argv))


if __name__ == "__main__":
    main()
