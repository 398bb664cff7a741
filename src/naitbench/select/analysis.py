"""Analyses the paper reports, as commands with written outputs.

`python -m naitbench.select.analysis overlap A.jsonl B.jsonl ... --out overlap.json`:
pairwise Jaccard overlap of subsets (e.g. selected for different targets) and the core subset
shared by all of them.
`python -m naitbench.select.analysis categories NAME.scores.jsonl --pool pool.jsonl
--out categories.json`: score distribution by source category (naitbench.data.categories).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from naitbench.data.categories import CATEGORIES, categorise
from naitbench.io import read_jsonl, write_json
from naitbench.select.subset import budget, rank_order


def overlap(subsets: dict[str, set[str]]) -> dict:
    """Jaccard index of every pair and the ids common to all subsets."""
    if len(subsets) < 2:
        raise ValueError("overlap needs at least two subsets")
    pairs = {f"{a} vs {b}": len(subsets[a] & subsets[b]) / len(subsets[a] | subsets[b])
             for a, b in combinations(sorted(subsets), 2)}
    core = sorted(set.intersection(*subsets.values()))
    return {"jaccard": pairs, "core": core, "core_size": len(core),
            "sizes": {k: len(v) for k, v in sorted(subsets.items())}}


def category_scores(scores: list[dict], pool: list[dict], top_ratio: float = 0.1) -> dict:
    """Per category: count, share of the pool, share of the top `top_ratio` (ranked as
    selection ranks), score quartiles."""
    category = {r["id"]: categorise(r["instruction"], r.get("input", "")) for r in pool}
    ids = [r["id"] for r in scores]
    order = rank_order(ids, [r["score"] for r in scores])
    top = {ids[i] for i in order[:budget(top_ratio, len(ids))]}
    out = {}
    for name in CATEGORIES:
        values = np.array([r["score"] for r in scores if category[r["id"]] == name])
        if not len(values):
            continue
        in_top = sum(1 for r in scores if r["id"] in top and category[r["id"]] == name)
        out[name] = {"count": len(values), "pool_share": len(values) / len(scores),
                     "top_share": in_top / len(top),
                     "quartiles": [float(q) for q in np.quantile(values, [0.25, 0.5, 0.75])]}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m naitbench.select.analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    ov = sub.add_parser("overlap", help="Jaccard overlap and core subset")
    ov.add_argument("subsets", nargs="+", type=Path)
    ov.add_argument("--out", type=Path, required=True)
    cat = sub.add_parser("categories", help="score distribution by source category")
    cat.add_argument("scores", type=Path)
    cat.add_argument("--pool", type=Path, required=True)
    cat.add_argument("--top-ratio", type=float, default=0.1)
    cat.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "overlap":
        result = overlap({p.stem: {r["id"] for r in read_jsonl(p)} for p in args.subsets})
        print(f"core subset: {result['core_size']} ids; " + ", ".join(
            f"{k}: {v:.3f}" for k, v in result["jaccard"].items()))
    else:
        result = category_scores(read_jsonl(args.scores), read_jsonl(args.pool), args.top_ratio)
        for name, row in result.items():
            print(f"{name:15s} pool {row['pool_share']:.1%}  top {row['top_share']:.1%}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
