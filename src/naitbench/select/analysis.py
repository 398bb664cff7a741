"""Analyses the paper reports, as commands with written outputs.

`python -m naitbench.select.analysis overlap A.jsonl B.jsonl ... --out overlap.json`:
pairwise Jaccard overlap of subsets (e.g. selected for different targets) and the core subset
shared by all of them.
`python -m naitbench.select.analysis categories NAME.scores.jsonl --pool pool.jsonl
--out categories.json`: score distribution by source category (naitbench.data.categories).
`python -m naitbench.select.analysis ablation [overrides] --out ablation.json`: from the stored
features, a base selector (`selectors.nait`, the published recipe) and each single change of a
config key toward another (`selectors.nait_variant`), plus named groups of keys and the other
selector itself; per row the Jaccard of its top `ratio` to the base's, its stability under
in-domain resampling (naitbench.select.stability) and the share of the target's category in
its subset. No forward pass: every row reads the one extraction.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from naitbench.data.categories import CATEGORIES, categorise
from naitbench.io import read_jsonl, write_json
from naitbench.select.build import make_context, make_selector
from naitbench.select.stability import jaccard, stability, top_ids
from naitbench.select.subset import budget, rank_order

#: selector config keys that name or budget a run rather than change its scores
NOT_RECIPE = ("_target_", "name", "stability_draws")


def overlap(subsets: dict[str, set[str]]) -> dict:
    """Jaccard index of every pair and the ids common to all subsets."""
    if len(subsets) < 2:
        raise ValueError("overlap needs at least two subsets")
    pairs = {f"{a} vs {b}": jaccard(subsets[a], subsets[b])
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


def ablation_rows(base: DictConfig, toward: DictConfig,
                  groups: Sequence[Sequence[str]] = ()) -> list[tuple[str, dict]]:
    """(label, overrides of `base`): the base itself, each key whose value differs in
    `toward` alone, each group of such keys together, and all of them (`toward`'s recipe)."""
    base_c, toward_c = OmegaConf.to_container(base), OmegaConf.to_container(toward)
    keys = [k for k in toward_c if k not in NOT_RECIPE and base_c.get(k) != toward_c[k]]
    rows = [(str(base_c.get("name", "base")), {})]
    rows += [(f"{k}: {toward_c[k]}", {k: toward_c[k]}) for k in keys]
    for group in groups:
        unknown = [k for k in group if k not in keys]
        if unknown:
            raise ValueError(f"ablation group {list(group)}: {unknown} do not differ between "
                             f"the two recipes (differing: {keys})")
        rows.append((" + ".join(f"{k}: {toward_c[k]}" for k in group),
                     {k: toward_c[k] for k in group}))
    rows.append((str(toward_c.get("name", "other")), {k: toward_c[k] for k in keys}))
    return rows


def ablation(cfg: DictConfig, base: str = "nait", toward: str = "nait_variant",
             groups: Sequence[Sequence[str]] = (("feature", "span"), ("k", "rest")),
             draws: int = 20, ratio: float = 0.1, category: str | None = None) -> dict:
    """Every ablation row's overlap with the base recipe, stability and category share."""
    for name in (base, toward):
        if name not in cfg.selectors:
            raise ValueError(f"selectors.{name} is not in the catalogue {sorted(cfg.selectors)}")
    category = category or cfg.target.name
    if category not in CATEGORIES:
        raise ValueError(f"--category {category!r}: use one of {CATEGORIES}")
    ctx = replace(make_context(cfg, targeted=True), save_artefacts=False)
    ids = [r["id"] for r in ctx.pool]
    in_category = {r["id"] for r in ctx.pool
                   if categorise(r["instruction"], r.get("input", "")) == category}
    rows, reference = [], None
    for label, overrides in ablation_rows(cfg.selectors[base], cfg.selectors[toward], groups):
        began = time.perf_counter()
        selector = make_selector(OmegaConf.merge(cfg.selectors[base], overrides))
        kept = top_ids(ids, selector.score(ctx), ratio)
        reference = kept if reference is None else reference
        rows.append({"row": label, "overrides": overrides,
                     "jaccard_to_base": jaccard(kept, reference),
                     "stability": stability(selector, ctx, draws, ratio),
                     "category_share": len(kept & in_category) / len(kept),
                     "wall_s": time.perf_counter() - began})
    return {"base": base, "toward": toward, "targets": list(ctx.targets), "ratio": ratio,
            "draws": draws, "category": category, "n_pool": len(ids),
            "pool_category_share": len(in_category) / len(ids), "rows": rows}


def ablation_table(result: dict) -> str:
    """The ablation as a Markdown table (what docs/nait.md shows)."""
    lines = [f"| row | Jaccard to {result['base']} | stability (mean Jaccard, "
             f"{result['draws']} draws) | {result['category']} share |",
             "|---|---|---|---|"]
    for row in result["rows"]:
        st = row["stability"]
        lines.append(f"| {row['row']} | {row['jaccard_to_base']:.3f} | "
                     f"{st['mean_jaccard']:.3f} (sd {st['sd_jaccard']:.3f}) | "
                     f"{row['category_share']:.1%} |")
    lines.append(f"| pool | | | {result['pool_category_share']:.1%} |")
    return "\n".join(lines)


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
    ab = sub.add_parser("ablation", help="the published recipe and single changes toward "
                                         "the variant, from the stored features")
    ab.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (profile=..., "
                                                 "paths.data_dir=..., target=...)")
    ab.add_argument("--base", default="nait")
    ab.add_argument("--toward", default="nait_variant")
    ab.add_argument("--groups", default="feature+span,k+rest",
                    help="comma-separated groups of keys changed together ('' for none)")
    ab.add_argument("--draws", type=int, default=20)
    ab.add_argument("--ratio", type=float, default=0.1)
    ab.add_argument("--category", default=None, help="default: the target's name")
    ab.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "ablation":
        from naitbench.config import compose

        groups = [g.split("+") for g in args.groups.split(",") if g]
        result = ablation(compose(args.overrides), args.base, args.toward, groups,
                          args.draws, args.ratio, args.category)
        print(ablation_table(result))
    elif args.command == "overlap":
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
