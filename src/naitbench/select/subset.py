"""Top-ratio selection with deterministic tie-breaking, and the subset files it writes.

Stability: the file training depends on, `<name>.jsonl`, holds only the kept ids in rank
order. Scores are floats whose last bits depend on the machine, the BLAS and the batch
shapes; they live in `<name>.scores.jsonl` and nothing downstream of training reads them, so a
re-run of features or selection that keeps the same ids re-trains nothing. The ranking itself
compares scores rounded to `TIE_DIGITS` significant digits, then ids: two candidates whose
scores differ only by float noise (far below one part in a million) are tied and ordered by
id. Noise can still reorder a pair when it carries one score across a rounding boundary; for
noise of relative size e that happens with a chance of about e / 1e-6 per near-tied pair
(about 1e-10 for float64 noise, 0.1 for float32 noise), against one half without rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naitbench.io import write_json, write_jsonl
from naitbench.provenance import library_versions

#: significant digits a score keeps when candidates are ranked (the rest is float noise)
TIE_DIGITS = 6
TIE_BREAK = (f"score rounded to {TIE_DIGITS} significant digits (higher first), then id "
             f"(ascending)")


def budget(ratio: float, n: int) -> int:
    """How many candidates a ratio keeps: round(ratio * n), at least one."""
    return max(1, min(n, math.floor(ratio * n + 0.5)))


def rounded(score: float, digits: int = TIE_DIGITS) -> float:
    """`score` to `digits` significant digits (correctly rounded decimal, so the result
    does not depend on how the score's last bits came out unless it sits on a boundary)."""
    return float(f"{float(score):.{digits - 1}e}")


def rank_order(ids: Sequence[str], scores: Sequence[float] | np.ndarray) -> list[int]:
    """Every candidate's index, best first: rounded score descending, then id ascending."""
    keys = [rounded(s) for s in scores]
    return sorted(range(len(ids)), key=lambda i: (-keys[i], ids[i]))


def top_ratio(ids: Sequence[str], scores: np.ndarray, ratio: float) -> list[int]:
    """Indices of the kept candidates, best first (`rank_order`, cut at the budget)."""
    return rank_order(ids, scores)[:budget(ratio, len(ids))]


def subset_name(method: str, ratio: float, seed: int, targets: Sequence[str] | None) -> str:
    """`<method>[-<target>[+<target>...]]-r<ratio>-s<seed>`: readable and unique per arm."""
    parts = [method]
    if targets:
        parts.append("+".join(targets))
    return "-".join([*parts, f"r{ratio:g}", f"s{seed}"])


def write_subset(out_dir: str | Path, name: str, ids: Sequence[str], scores: np.ndarray,
                 kept: Sequence[int], manifest: Mapping[str, Any]) -> Path:
    """data/subsets/<name>.jsonl (the kept ids in rank order, nothing else),
    <name>.scores.jsonl (every candidate's score, pool order) and <name>.manifest.json
    (with the tie-break rule and library versions); all written atomically."""
    out_dir = Path(out_dir)
    write_jsonl(out_dir / f"{name}.jsonl", ({"id": ids[i]} for i in kept))
    write_jsonl(out_dir / f"{name}.scores.jsonl",
                ({"id": i, "score": float(s)} for i, s in zip(ids, scores, strict=True)))
    write_json(out_dir / f"{name}.manifest.json",
               {**manifest, "name": name, "n_selected": len(kept), "tie_break": TIE_BREAK,
                "versions": library_versions()})
    return out_dir / f"{name}.jsonl"
