"""The report stage: Markdown + self-contained HTML comparison with seed-level statistics,
figures for `dvc plots`, a flat comparison JSON, and the W&B comparison."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, trained_pairs
from naitbench.errors import ConfigError
from naitbench.io import atomic_open, read_jsonl, write_json
from naitbench.report.collect import collect, selection_costs
from naitbench.report.compare import Row, comparison_rows
from naitbench.report.compute import check_precisions, compute_table
from naitbench.report.figures import main_figure
from naitbench.report.names import (
    arm_label,
    arm_names,
    arm_order,
    short_subset_name,
    task_heading,
    task_order,
    task_title,
)
from naitbench.report.render import html_page, markdown
from naitbench.report.results import HEADLINE_METHODS, REFERENCE_FULL
from naitbench.select.analysis import overlap


def _revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True)
    return result.stdout.strip() or "unknown"


def overlap_section(data_dir: Path, ratio_names: dict) -> list[str]:
    """Per ratio: the Jaccard matrix of the subsets, and the core subset shared by every
    method's subset (random draws excluded: they share nothing by design)."""
    lines = []
    for ratio, names in sorted(ratio_names.items()):
        if len(names) < 2:
            continue
        ids = {n: {r["id"] for r in read_jsonl(data_dir / "subsets" / f"{n}.jsonl")}
               for n in sorted(names)}
        methods = [n for n in ids if not n.startswith("random-")]
        if len(methods) >= 2:
            core = overlap({n: ids[n] for n in methods})["core_size"]
            lines += [f"Ratio {ratio:g}: core subset shared by all {len(methods)} method "
                      f"subsets (random draws excluded): {core} samples.", ""]
        jaccard = overlap(ids)["jaccard"]
        short = {n: short_subset_name(n, ids) for n in ids}
        lines += ["| Jaccard | " + " | ".join(short[n] for n in ids) + " |",
                  "|---|" + "---|" * len(ids)]
        for a in ids:
            cells = ["1" if a == b else
                     f"{jaccard.get(f'{a} vs {b}', jaccard.get(f'{b} vs {a}')):.2f}"
                     for b in ids]
            lines.append(f"| {short[a]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines or ["Fewer than two subsets per ratio: no overlap to show."]


def transfer_section(rows: list[Row]) -> list[str]:
    """Difference to random subsets for every (selection target, evaluation task)."""
    targeted = [r for r in rows if r.target and r.vs_random]
    tasks = task_order(targeted)
    if not targeted:
        return ["No targeted arm has a random reference yet."]
    names = arm_names(rows)
    lines = ["| arm (selected for) | " + " | ".join(f"{task_title(t)} `{t}`" for t in tasks)
             + " |", "|---|" + "---|" * len(tasks)]
    for arm in dict.fromkeys(r.arm for r in sorted(targeted, key=arm_order)):
        cells = {r.task: f"{r.vs_random.difference:+.4f} ({r.vs_random.verdict})"
                 for r in targeted if r.arm == arm}
        lines.append(f"| {names[arm]} | " + " | ".join(cells.get(t, "-") for t in tasks) + " |")
    return lines


def training_section(data_dir: Path, models: list[tuple[str, int]]) -> list[str]:
    """What each trained row saw (epochs, steps, tokens, time): rows trained differently,
    e.g. the full pool with fewer epochs, are visible next to their scores."""
    files = [data_dir / "runs" / name / f"seed{seed}" / "train_metrics.json"
             for name, seed in models]
    files = [f for f in files if f.exists()]
    if not files:
        return ["No training metrics found."]
    lines = ["| subset | training seed | examples | epochs | steps | tokens | wall time (s) | "
             "tokens/s | final loss |", "|---|---|---|---|---|---|---|---|---|"]
    for path in files:
        m = json.loads(path.read_text())
        lines.append(f"| {path.parent.parent.name} | {path.parent.name.removeprefix('seed')} | "
                     f"{m['examples_trained']} | {m['epochs']} | {m['steps']} | "
                     f"{m['tokens']:,} | {m['wall_time_s']:.0f} | {m['tokens_per_s']:.0f} | "
                     f"{m['final_loss']:.4f} |")
    return lines


def headline_methods(cfg: DictConfig) -> list[str]:
    """The methods the first screen answers for (`report.headline`), one Holm family."""
    methods = list(cfg.report.get("headline") or HEADLINE_METHODS)
    unknown = [m for m in methods if m.partition("+")[0] not in cfg.selectors]
    if unknown:
        raise ConfigError(f"report.headline names {unknown}, which are not selectors; known: "
                          f"{sorted(cfg.selectors)}")
    return methods


def build_report(cfg: DictConfig) -> Path:
    """Collect scores, compute statistics, write report.md/.html, figures and comparison.json."""
    data_dir = Path(cfg.paths.data_dir)
    out_dir = Path(cfg.report.dir)
    subsets = list(cfg.runs.subsets)
    models = [(REFERENCE_FULL, int(s)) for s in cfg.runs.seeds] + trained_pairs(cfg.runs)
    runs = collect(data_dir, models)
    if not runs:
        raise FileNotFoundError(f"no scored models under {data_dir}/scores: run evaluate first")
    precision = check_precisions(runs, bool(cfg.report.get("allow_mixed_precision", False)))
    headline = headline_methods(cfg)
    rows = comparison_rows(runs, headline=headline, alpha=cfg.report.alpha,
                           power=cfg.report.power)
    figure = main_figure(rows, out_dir / "figures" / "main.png")
    costs = selection_costs(data_dir, subsets)
    by_ratio: dict = {}
    for run in runs:
        if run.ratio is not None and run.train_seed == min(
                r.train_seed for r in runs if r.name.split("/")[0] == run.name.split("/")[0]):
            by_ratio.setdefault(run.ratio, []).append(run.name.split("/")[0])
    meta = {"profile": cfg.profile_name, "model": cfg.model.name,
            "git revision": _revision(), "command": "make repro (dvc repro)",
            "models scored": str(len(runs)), "precision": precision}
    sections = {"Subset overlap and core subset": overlap_section(data_dir, by_ratio),
                "Transfer: difference to random subsets (selected for A, scored on B)":
                    transfer_section(rows),
                "Training": training_section(data_dir, models),
                "What ran: precision and device of every stage": compute_table(runs),
                "Notes": list(cfg.report.notes)}
    text = markdown(f"NAIT-Bench comparison: {cfg.profile_name}", meta, rows, figure, costs,
                    sections, out_dir, headline)
    with atomic_open(out_dir / "report.md") as handle:
        handle.write(text + "\n")
    with atomic_open(out_dir / "report.html") as handle:
        handle.write(html_page(f"NAIT-Bench: {cfg.profile_name}", text, [figure], out_dir))
    names = arm_names(rows)
    flat = [{**{k: v for k, v in asdict(r).items() if k not in ("vs_random", "vs_full")},
             "arm": arm_label(r), "arm_name": names[r.arm],
             "task_title": task_heading(rows, r.task),
             "vs_random": asdict(r.vs_random) if r.vs_random else None,
             "vs_full": asdict(r.vs_full) if r.vs_full else None} for r in rows]
    write_json(out_dir / "comparison.json", {"rows": flat, "costs": costs})
    write_json(out_dir / "plot.json", [{"arm": f["arm"], "task": f["task"], "mean": f["mean"]}
                                       for f in flat])
    from naitbench.tracking import log_comparison

    log_comparison(cfg.tracking, [{k: v for k, v in f.items() if k != "values"} for f in flat],
                   {"main": figure}, config={"profile": cfg.profile_name})
    return out_dir / "report.md"


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        print(f"report written: {build_report(cfg)}")


if __name__ == "__main__":
    main()
