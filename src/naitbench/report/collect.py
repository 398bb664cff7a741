"""Reading evaluated runs from disk into RunResults (the report imports no stage code).

Layout read: data/scores/base, data/scores/<subset>/seed<k> ({metrics.json, samples.jsonl}),
data/subsets/<subset>.manifest.json (method, targets, ratio, selection seed, cost), and the
precision and device of each stage (naitbench.report.compute; training's from
data/runs/<subset>/seed<k>/train_metrics.json).
Per-item values of a bits-per-byte task are rescaled by n * bytes_i / total bytes, so their
plain mean equals lm-eval's byte-weighted aggregate and the paired bootstrap resamples the
same quantity the metrics file reports.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from naitbench.io import read_jsonl
from naitbench.report.compute import run_compute
from naitbench.report.results import BASE, REFERENCE_FULL, RunResult, TaskScore

SEED_DIR = re.compile(r"seed(\d+)$")


def task_scores(score_dir: Path) -> dict[str, TaskScore]:
    """Every task of one scored model: the metrics-file aggregate and its item values."""
    metrics = json.loads((score_dir / "metrics.json").read_text())
    rows_by_task: dict[str, list[dict]] = defaultdict(list)
    for row in read_jsonl(score_dir / "samples.jsonl"):
        rows_by_task[row["task"]].append(row)
    scores = {}
    for task, rows in sorted(rows_by_task.items()):
        metric = rows[0]["metric"]
        if metric == "bits_per_byte":
            total = sum(r["bytes"] for r in rows)
            items = {r["id"]: -r["loglikelihood"] / math.log(2) / total * len(rows) for r in rows}
        else:
            items = {r["id"]: float(r["value"]) for r in rows}
        value = metrics.get(f"{task}/{metric}")
        if value is None:
            raise KeyError(f"{score_dir}/metrics.json has no {task}/{metric}")
        scores[task] = TaskScore(metric=metric, higher_is_better=bool(rows[0]["higher_is_better"]),
                                 value=float(value), items=items)
    return scores


def scored_dirs(data_dir: Path, models: Sequence[tuple[str, int]] | None) -> list[Path]:
    """The score directories of the matrix's `models` ((subset or full, training seed) pairs),
    or with no matrix given every one on disk. A matrix row without scores is an error (the
    base model's too: every matrix scores it, and a report without it would be silently
    short), and rows left on disk by an earlier, larger matrix are not read."""
    base = data_dir / "scores" / BASE
    if models is None:
        return ([base] if (base / "metrics.json").exists() else []) + [
            m.parent for m in sorted((data_dir / "scores").glob("*/seed*/metrics.json"))]
    dirs = [base,
            *(data_dir / "scores" / name / f"seed{seed}" for name, seed in models)]
    missing = [str(d) for d in dirs if not (d / "metrics.json").exists()]
    if missing:
        raise FileNotFoundError(f"no metrics.json in {missing[:5]}: run their evaluate stages")
    return dirs


def collect(data_dir: str | Path,
            models: Sequence[tuple[str, int]] | None = None) -> list[RunResult]:
    """The scored models of the matrix (`models`: (subset or full, training seed) pairs) and
    the base model, labelled from the subset manifests; everything on disk when no matrix is
    given."""
    data_dir = Path(data_dir)
    runs = []
    for score_dir in scored_dirs(data_dir, models):
        if score_dir.name == BASE:
            runs.append(RunResult(method=BASE, target=None, ratio=None, selection_seed=None,
                                  train_seed=None, name=BASE, scores=task_scores(score_dir),
                                  compute=run_compute(score_dir, None, {})))
            continue
        subset, train_seed = score_dir.parent.name, int(SEED_DIR.search(score_dir.name)[1])
        trained = data_dir / "runs" / subset / score_dir.name
        if subset == REFERENCE_FULL:
            runs.append(RunResult(method=REFERENCE_FULL, target=None, ratio=None,
                                  selection_seed=None, train_seed=train_seed,
                                  name=f"full/seed{train_seed}", scores=task_scores(score_dir),
                                  compute=run_compute(score_dir, trained, {})))
            continue
        manifest = json.loads((data_dir / "subsets" / f"{subset}.manifest.json").read_text())
        runs.append(RunResult(method=manifest["method"],
                              target="+".join(manifest["targets"]) or None,
                              ratio=manifest["ratio"], selection_seed=manifest["seed"],
                              train_seed=train_seed, name=f"{subset}/seed{train_seed}",
                              scores=task_scores(score_dir), cost=manifest["cost"],
                              compute=run_compute(score_dir, trained,
                                                  manifest["cost"])))
    return runs


def selection_costs(data_dir: str | Path, subsets: Sequence[str] | None = None) -> list[dict]:
    """One row per subset's own selection work (the matrix's `subsets`, or every manifest on
    disk), then each shared extraction pass once."""
    rows, shared = [], {}
    paths = (sorted((Path(data_dir) / "subsets").glob("*.manifest.json")) if subsets is None
             else [Path(data_dir) / "subsets" / f"{name}.manifest.json" for name in subsets])
    for path in paths:
        manifest = json.loads(path.read_text())
        cost = manifest["cost"]
        stores = sorted(cost.get("shared", {}))
        rows.append({"method": manifest["method"], "target": "+".join(manifest["targets"]),
                     "subset": manifest["name"], "wall_s": cost["wall_s"],
                     "forward_tokens": cost["forward_tokens"],
                     "backward_tokens": cost["backward_tokens"],
                     "note": f"+ shared extraction ({len(stores)} stores)" if stores else "",
                     "stability": manifest.get("stability")})
        for store in stores:
            entry = shared.setdefault(store, {**cost["shared"][store], "users": set()})
            entry["users"].add(manifest["method"])
    for store, entry in sorted(shared.items()):
        rows.append({"method": "shared extraction", "target": Path(store).name,
                     "wall_s": entry.get("wall_s", 0.0),
                     "forward_tokens": entry.get("forward_tokens", 0), "backward_tokens": 0,
                     "note": "one forward pass used by " + ", ".join(sorted(entry["users"]))})
    return rows
