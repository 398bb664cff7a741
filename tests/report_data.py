"""A realistic report input on disk, made up: score dirs with per-item samples, subset
manifests and subset files, laid out as the pipeline writes them (tests only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from naitbench.io import write_json, write_jsonl

#: task -> (held-out items, base model's mean bits per byte)
TASKS = {"nb_humaneval_bpb": (104, 0.545), "nb_gsm8k_bpb": (60, 0.696)}


def write_scores(out: Path, shift: dict[str, float], rng: np.random.Generator,
                 difficulty: dict[str, np.ndarray]) -> None:
    """One scored model: items are the task's difficulty + the model's shift + item noise."""
    metrics, samples = {}, []
    for task, (n, _) in TASKS.items():
        nbytes = 200 + 40 * np.arange(n) % 300
        bpb = difficulty[task] + shift[task] + rng.normal(0, 0.01, n)
        ll = -bpb * nbytes * math.log(2)
        metrics[f"{task}/bits_per_byte"] = float(-ll.sum() / math.log(2) / nbytes.sum())
        samples += [{"task": task, "doc_id": i, "id": f"{task}-{i}", "metric": "bits_per_byte",
                     "higher_is_better": False, "loglikelihood": float(ll[i]),
                     "bytes": int(nbytes[i]), "value": float(bpb[i])} for i in range(n)]
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "samples.jsonl", samples)


def fabricate(data: Path, effects: dict[str, dict[str, float]], seeds: list[int],
              n_random: int = 5, seed: int = 0) -> list[str]:
    """Base, full data and every subset of `effects` (plus `n_random` random subsets) x
    training `seeds`; `effects` maps a subset name to its shift from the base per task.
    Random subsets differ by a subset effect, training seeds by a smaller one. Returns the
    subset names, random ones included."""
    rng = np.random.default_rng(seed)
    difficulty = {t: rng.normal(mean, 0.08, n) for t, (n, mean) in TASKS.items()}
    effects = {**effects, **{f"random-r0.1-s{k}": {t: -0.01 + rng.normal(0, 0.004)
                                                   for t in TASKS} for k in range(n_random)}}
    write_scores(data / "scores" / "base", dict.fromkeys(TASKS, 0.0), rng, difficulty)
    for name, shift in {"full": dict.fromkeys(TASKS, -0.025), **effects}.items():
        for train_seed in seeds:
            noisy = {t: s + rng.normal(0, 0.0015) for t, s in shift.items()}
            write_scores(data / "scores" / name / f"seed{train_seed}", noisy, rng, difficulty)
        if name == "full":
            continue
        method, *rest = name.split("-")        # <method>[-<target>]-r<ratio>-s<seed>
        targets = rest[:1] if len(rest) == 3 else []
        ids = rng.choice(985, 98, replace=False)
        write_jsonl(data / "subsets" / f"{name}.jsonl", [{"id": f"p{i}"} for i in ids])
        write_json(data / "subsets" / f"{name}.manifest.json", {
            "method": method, "targets": targets, "ratio": 0.1,
            "seed": int(name.rsplit("-s", 1)[1]), "name": name,
            "cost": {"wall_s": 1.0, "forward_tokens": 1000, "backward_tokens": 0,
                     "shared": {}}})
    return list(effects)
