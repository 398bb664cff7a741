"""Which precision and device made every score, and the rule that scores of different
precisions are not compared unless the user asks for it (`report.allow_mixed_precision`).

Each stage records `compute` ({"precision", "device"}, naitbench.models.precision):
features in the selection manifest's shared stores, training in train_metrics.json, scoring
in results.json. A stage that wrote nothing (an older run) reads as not recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from naitbench.errors import UserError
from naitbench.report.results import RunResult

STAGES = ("features", "train", "evaluate")
ALLOW_FLAG = "report.allow_mixed_precision"


class MixedPrecisionError(UserError, ValueError):
    """Scores made in different precisions would be compared as if alike."""


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()).get("compute") if path.exists() else None


def features_compute(cost: Mapping) -> dict | None:
    """The compute of the feature stores a selection read (None: it read none, or they
    predate the record); several stores of one selection are joined like one store's."""
    records = [s.get("compute") for s in cost.get("shared", {}).values() if s.get("compute")]
    if not records:
        return None
    return {k: ",".join(sorted({v for r in records for v in r[k].split(",")}))
            for k in records[0]}


def run_compute(score_dir: Path, run_dir: Path | None, cost: Mapping) -> dict[str, dict | None]:
    """One scored model's compute per stage; `run_dir` None: the base model (not trained)."""
    return {"features": features_compute(cost),
            "train": _read(run_dir / "train_metrics.json") if run_dir else None,
            "evaluate": _read(score_dir / "results.json")}


def precisions(runs: Sequence[RunResult]) -> dict[str, dict[str, list[str]]]:
    """Per stage, each recorded precision and the models that ran in it."""
    out: dict[str, dict[str, list[str]]] = {stage: {} for stage in STAGES}
    for run in runs:
        for stage, record in run.compute.items():
            if record:
                out[stage].setdefault(record["precision"], []).append(run.name)
    return out


def check_precisions(runs: Sequence[RunResult], allow_mixed: bool) -> str:
    """One line for the report saying which precision made the scores; raises
    MixedPrecisionError when a stage ran in more than one and `allow_mixed` is false."""
    seen = precisions(runs)
    mixed = {stage: by for stage, by in seen.items() if len(by) > 1}
    detail = "; ".join(
        f"{stage}: " + ", ".join(f"{p} ({len(names)} models, e.g. {names[0]})"
                                 for p, names in sorted(by.items()))
        for stage, by in mixed.items())
    if mixed and not allow_mixed:
        raise MixedPrecisionError(
            f"the scores to compare were made in different precisions ({detail}); re-run the "
            f"odd stages in one precision (train.precision, features.precision, eval.dtype), "
            f"or set {ALLOW_FLAG}=true to compare them anyway")
    if mixed:
        return (f"MIXED, compared anyway ({ALLOW_FLAG}=true): {detail}; differences between "
                f"these models include the precision change")
    parts = [f"{stage} {next(iter(by))}" for stage, by in seen.items() if by]
    missing = sum(1 for run in runs if not all(run.compute.get(s) for s in _expected(run)))
    line = ", ".join(parts) if parts else "not recorded"
    return line + (f" ({missing} models without a record)" if missing and parts else "")


def _expected(run: RunResult) -> list[str]:
    """The stages a model went through: the base model only scoring, the full pool no
    selection, random and untargeted subsets no feature pass."""
    stages = ["evaluate"] if run.train_seed is None else ["train", "evaluate"]
    return (["features"] if run.cost.get("shared") else []) + stages


def compute_table(runs: Sequence[RunResult]) -> list[str]:
    """The run table: per scored model, the precision and device of each of its stages."""
    lines = ["| model | features | training | scoring |", "|---|---|---|---|"]
    for run in runs:
        cells = []
        for stage in STAGES:
            record = run.compute.get(stage)
            cells.append(f"{record['precision']} ({record['device']})" if record else
                         "not recorded" if stage in _expected(run) else "-")
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    return lines
