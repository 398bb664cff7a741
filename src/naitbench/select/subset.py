"""Top-ratio selection with deterministic tie-breaking, and the subset files it writes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naitbench.io import write_json, write_jsonl


def budget(ratio: float, n: int) -> int:
    """How many candidates a ratio keeps: round(ratio * n), at least one."""
    return max(1, min(n, math.floor(ratio * n + 0.5)))


def top_ratio(ids: Sequence[str], scores: np.ndarray, ratio: float) -> list[int]:
    """Indices of the kept candidates, best first; equal scores are ordered by id."""
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))
    return order[:budget(ratio, len(ids))]


def subset_name(method: str, ratio: float, seed: int, targets: Sequence[str] | None) -> str:
    """`<method>[-<target>[+<target>...]]-r<ratio>-s<seed>`: readable and unique per arm."""
    parts = [method]
    if targets:
        parts.append("+".join(targets))
    return "-".join([*parts, f"r{ratio:g}", f"s{seed}"])


def write_subset(out_dir: str | Path, name: str, ids: Sequence[str], scores: np.ndarray,
                 kept: Sequence[int], manifest: Mapping[str, Any]) -> Path:
    """data/subsets/<name>.jsonl (kept ids, scores, ranks), <name>.scores.jsonl (every
    candidate's score) and <name>.manifest.json; all written atomically."""
    out_dir = Path(out_dir)
    write_jsonl(out_dir / f"{name}.jsonl",
                ({"id": ids[i], "rank": rank, "score": float(scores[i])}
                 for rank, i in enumerate(kept, start=1)))
    write_jsonl(out_dir / f"{name}.scores.jsonl",
                ({"id": i, "score": float(s)} for i, s in zip(ids, scores, strict=True)))
    write_json(out_dir / f"{name}.manifest.json", {**manifest, "name": name,
                                                   "n_selected": len(kept)})
    return out_dir / f"{name}.jsonl"
