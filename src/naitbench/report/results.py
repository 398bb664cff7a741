"""What the report compares: one evaluated model per row, grouped into replicated methods."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

REFERENCE_RANDOM = "random"
REFERENCE_FULL = "full"
BASE = "base"
#: the methods the report's first screen answers for (one family of comparisons)
HEADLINE_METHODS = ("nait", "rds")


@dataclass(frozen=True)
class TaskScore:
    """One task's score of one model: the aggregate and the per-item values behind it."""

    metric: str
    higher_is_better: bool
    value: float
    items: dict[str, float]


@dataclass
class RunResult:
    """One evaluated model: which subset it was trained on, with which seeds, and its scores."""

    method: str
    target: str | None
    ratio: float | None
    selection_seed: int | None
    train_seed: int | None
    name: str
    scores: dict[str, TaskScore]
    cost: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)   # stage -> {precision, device} (report.compute)

    @property
    def arm(self) -> tuple[str, str | None, float | None]:
        """The comparison arm: replicates of one arm differ only in their seeds."""
        return (self.method, self.target, self.ratio)


def group_arms(runs: list[RunResult]) -> dict[tuple, list[RunResult]]:
    """Replicates per arm, in a stable order (by seeds)."""
    arms: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        arms[run.arm].append(run)
    for replicates in arms.values():
        replicates.sort(key=lambda r: (r.selection_seed or 0, r.train_seed or 0, r.name))
    return dict(sorted(arms.items(), key=lambda kv: tuple(str(x) for x in kv[0])))
