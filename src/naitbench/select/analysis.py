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
`python -m naitbench.select.analysis grid [overrides] --out grid.json`: every targeted
representation (`--representations`, default NAIT, RDS+, kNN, BM25) under every rule of
naitbench.select.rules (`--rules`), plus DSIR and random, scored from the stored features at
`--ratio`: per cell the subset size, its Jaccard overlap with every other cell, stability
over in-domain bootstrap draws, the share of the target's category and the wall time. No
training: the table says which cells differ enough to be worth a trained arm.
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

from naitbench.cli import reported_errors
from naitbench.data.categories import CATEGORIES, categorise
from naitbench.io import atomic_open, read_jsonl, write_json
from naitbench.select.build import make_context, make_selector
from naitbench.select.rules import ALIASES, RULES
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


#: representations the grid crosses with the rules by default (LESS too with
#: `--representations`, at the price of its warmup and gradient passes)
GRID_REPRESENTATIONS = ("nait", "rds", "knn", "bm25")
#: single rows beside the crossed ones: model-free DSIR and a random subset
GRID_SINGLES = ("dsir", "random")


def grid_cells(cfg: DictConfig, representations: Sequence[str],
               rules: Sequence[str]) -> list[tuple[str, DictConfig]]:
    """(label, selector config) of every representation x rule cell (`own` is the
    representation's default), then DSIR and random; aliases of a listed rule, and the
    density rule on a representation without candidate vectors, are left out."""
    cells = []
    for name in representations:
        if name not in cfg.selectors:
            raise ValueError(f"--representations: {name!r} is not in the selectors catalogue "
                             f"{sorted(cfg.selectors)}")
        base = cfg.selectors[name]
        if "rule" not in base:
            raise ValueError(f"--representations: {name} has no rule axis (not a similarity "
                             f"representation)")
        for rule in rules:
            if rule != "own" and rule not in RULES:
                raise ValueError(f"--rules: {rule!r}: use own or one of {sorted(RULES)}")
            if ALIASES.get(rule) in rules or (rule == "knn_kde" and name == "bm25"):
                continue
            label = f"{name} + {base.rule or 'own'}" if rule == "own" else f"{name} + {rule}"
            config = base if rule == "own" else OmegaConf.merge(base, {"rule": rule})
            cells.append((label, config))
    return cells + [(name, cfg.selectors[name]) for name in GRID_SINGLES]


def grid(cfg: DictConfig, representations: Sequence[str] = GRID_REPRESENTATIONS,
         rules: Sequence[str] = ("own", *sorted(set(RULES) - set(ALIASES))),
         draws: int = 10, ratio: float = 0.1, category: str | None = None) -> dict:
    """Every cell's subset, overlap, stability, category share and wall time."""
    category = category or cfg.target.name
    if category not in CATEGORIES:
        raise ValueError(f"--category {category!r}: use one of {CATEGORIES}")
    cfg = OmegaConf.merge(cfg, {"ratio": ratio})
    ctx = replace(make_context(cfg, targeted=True), save_artefacts=False)
    ids = [r["id"] for r in ctx.pool]
    in_category = {r["id"] for r in ctx.pool
                   if categorise(r["instruction"], r.get("input", "")) == category}
    rows, kept = [], {}
    for label, config in grid_cells(cfg, representations, rules):
        if label in kept:
            continue
        began = time.perf_counter()
        selector = make_selector(config)
        try:
            kept[label] = top_ids(ids, selector.score(ctx), ratio)
        except ValueError as error:     # a rule that cannot rank this pool says why
            rows.append({"cell": label, "selector": OmegaConf.to_container(config),
                         "error": str(error)})
            continue
        wall = time.perf_counter() - began
        rows.append({"cell": label, "selector": OmegaConf.to_container(config),
                     "size": len(kept[label]), "ids": sorted(kept[label]), "wall_s": wall,
                     "category_share": len(kept[label] & in_category) / len(kept[label]),
                     "stability": (stability(selector, ctx, draws, ratio)
                                   if selector.targeted and draws > 1 else None)})
    for row in rows:
        if row["cell"] in kept:
            row["jaccard"] = {other: jaccard(kept[row["cell"]], kept[other]) for other in kept}
    return {"targets": list(ctx.targets), "ratio": ratio, "draws": draws,
            "category": category, "n_pool": len(ids),
            "pool_category_share": len(in_category) / len(ids), "rows": rows}


def grid_table(result: dict) -> str:
    """The grid as Markdown: one row per cell, then the overlap matrix (cells numbered); a
    cell whose rule refused the pool is listed under the table with its reason."""
    failed = [r for r in result["rows"] if "error" in r]
    rows = [r for r in result["rows"] if "error" not in r]
    lines = [f"| # | cell | size | stability (mean Jaccard, {result['draws']} draws) | "
             f"{result['category']} share | wall s |", "|---|---|---|---|---|---|"]
    for number, row in enumerate(rows, 1):
        st = row["stability"]
        stable = f"{st['mean_jaccard']:.3f} (sd {st['sd_jaccard']:.3f})" if st else "-"
        lines.append(f"| {number} | {row['cell']} | {row['size']} | {stable} | "
                     f"{row['category_share']:.1%} | {row['wall_s']:.1f} |")
    lines.append(f"| | pool | {result['n_pool']} | | {result['pool_category_share']:.1%} | |")
    lines += [f"\nNot ranked: {r['cell']}: {r['error']}" for r in failed]
    lines += ["", "Jaccard overlap of the subsets (row # against column #):", "",
              "| # | " + " | ".join(str(i) for i in range(1, len(rows) + 1)) + " |",
              "|---" * (len(rows) + 1) + "|"]
    for number, row in enumerate(rows, 1):
        lines.append(f"| {number} | " + " | ".join(
            f"{row['jaccard'][other['cell']]:.2f}" for other in rows) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    with reported_errors():
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
        gr = sub.add_parser("grid", help="every representation x rule, DSIR and random, from "
                                         "the stored features (no training)")
        gr.add_argument("overrides", nargs="*", help="Hydra overrides of conf/")
        gr.add_argument("--representations", default=",".join(GRID_REPRESENTATIONS))
        gr.add_argument("--rules", default="own," + ",".join(sorted(set(RULES) - set(ALIASES))),
                        help="comma-separated; own: each representation's default rule")
        gr.add_argument("--draws", type=int, default=10)
        gr.add_argument("--ratio", type=float, default=0.1)
        gr.add_argument("--category", default=None, help="default: the target's name")
        gr.add_argument("--out", type=Path, required=True)
        args = parser.parse_args(argv)
        if args.command == "grid":
            from naitbench.config import compose

            result = grid(compose(args.overrides), args.representations.split(","),
                          args.rules.split(","), args.draws, args.ratio, args.category)
            print(grid_table(result))
            with atomic_open(args.out.with_suffix(".md")) as handle:
                handle.write(grid_table(result) + "\n")
        elif args.command == "ablation":
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
