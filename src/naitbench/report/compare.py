"""Comparison rows: every arm on every task against random subsets and full data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naitbench.report.results import REFERENCE_FULL, REFERENCE_RANDOM, RunResult, group_arms
from naitbench.report.stats import Comparison, between_seed_sd, compare


@dataclass
class Row:
    """One arm on one task, with its statistics against the references."""

    method: str
    target: str | None
    ratio: float | None
    task: str
    metric: str
    higher_is_better: bool
    mean: float
    sd: float
    n: int
    values: list[float]
    vs_random: Comparison | None
    vs_full: Comparison | None

    @property
    def arm(self) -> tuple[str, str | None, float | None]:
        """The arm this row belongs to, as `RunResult.arm`."""
        return (self.method, self.target, self.ratio)


def _random_arm(arms: dict, ratio: float | None) -> list[RunResult] | None:
    """The random subsets of the arm's ratio; for the base model and full data (no ratio),
    the random subsets when the run has a single ratio."""
    randoms = {arm_ratio: runs for (method, _, arm_ratio), runs in arms.items()
               if method == REFERENCE_RANDOM}
    if ratio is None and len(randoms) == 1:
        return next(iter(randoms.values()))
    return randoms.get(ratio)


def _full_arm(arms: dict) -> list[RunResult] | None:
    return next((runs for (method, _, _), runs in arms.items() if method == REFERENCE_FULL), None)


def _items(runs: list[RunResult], task: str) -> list[dict[str, float]]:
    return [run.scores[task].items for run in runs]


def comparison_rows(runs: list[RunResult], *, n_boot: int = 2000, seed: int = 0) -> list[Row]:
    """One row per (arm, task) the arm was scored on, references included."""
    arms = group_arms(runs)
    full = _full_arm(arms)
    rows = []
    for (method, target, ratio), replicates in arms.items():
        tasks = sorted(set.intersection(*(set(r.scores) for r in replicates)))
        random_runs = _random_arm(arms, ratio)
        for task in tasks:
            first = replicates[0].scores[task]
            values = [r.scores[task].value for r in replicates]
            higher = first.higher_is_better

            def against(reference: list[RunResult] | None, *, _task: str = task,
                        _reps: list[RunResult] = replicates, _higher: bool = higher):
                if not reference or reference is _reps or any(_task not in r.scores
                                                              for r in reference):
                    return None
                return compare(_items(_reps, _task), _items(reference, _task),
                               higher_is_better=_higher, n_boot=n_boot, seed=seed)

            rows.append(Row(method=method, target=target, ratio=ratio, task=task,
                            metric=first.metric, higher_is_better=higher,
                            mean=float(np.mean(values)),
                            sd=between_seed_sd(np.array(values)), n=len(values), values=values,
                            vs_random=against(random_runs), vs_full=against(full)))
    return rows
