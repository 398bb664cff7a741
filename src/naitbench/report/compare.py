"""Comparison rows: every arm on every task against random subsets and full data, and the
headline family (NAIT and RDS+ against random subsets on every task) with Holm's correction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from naitbench.report.results import (
    HEADLINE_METHODS,
    REFERENCE_FULL,
    REFERENCE_RANDOM,
    RunResult,
    group_arms,
)
from naitbench.report.stats import (
    ALPHA,
    POWER,
    Comparison,
    between_seed_sd,
    compare,
    family_verdict,
    holm,
)


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
    #: in the headline family: the Holm-adjusted p value, its verdict and the family's size
    family_p: float | None = None
    family_verdict: str | None = None
    family_size: int | None = None

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


def subsets(runs: list[RunResult], task: str) -> list[list[dict[str, float]]]:
    """An arm's item scores on `task` grouped by subset: one list per selection seed (the
    independent draws), holding its training seeds (sub-replicates)."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(run.selection_seed, []).append(run.scores[task].items)
    return list(groups.values())


def comparison_rows(runs: list[RunResult], *, headline: Sequence[str] = HEADLINE_METHODS,
                    alpha: float = ALPHA, power: float = POWER) -> list[Row]:
    """One row per (arm, task) the arm was scored on, references included; the rows of the
    `headline` methods against random subsets get the family's Holm-adjusted verdicts."""
    arms = group_arms(runs)
    full = _full_arm(arms)
    rows = []
    for (method, target, ratio), replicates in arms.items():
        tasks = sorted(set.intersection(*(set(r.scores) for r in replicates)))
        random_runs = _random_arm(arms, ratio)
        for task in tasks:
            first = replicates[0].scores[task]
            values = [r.scores[task].value for r in replicates]

            def scored(reference: list[RunResult] | None, _task: str = task) -> bool:
                return bool(reference) and all(_task in r.scores for r in reference)

            def against(reference: list[RunResult] | None, *, _task: str = task,
                        _reps: list[RunResult] = replicates,
                        _random: list[RunResult] | None = random_runs,
                        _higher: bool = first.higher_is_better) -> Comparison | None:
                if not scored(reference, _task) or reference is _reps:
                    return None
                spread = (subsets(_random, _task) if scored(_random, _task)
                          and reference is not _random and _random is not _reps else None)
                return compare(subsets(_reps, _task), subsets(reference, _task),
                               higher_is_better=_higher, spread=spread, alpha=alpha,
                               power=power)

            rows.append(Row(method=method, target=target, ratio=ratio, task=task,
                            metric=first.metric, higher_is_better=first.higher_is_better,
                            mean=float(np.mean(values)),
                            sd=between_seed_sd(np.array(values)), n=len(values), values=values,
                            vs_random=against(random_runs), vs_full=against(full)))
    apply_family(rows, headline, alpha=alpha)
    return rows


def apply_family(rows: list[Row], methods: Sequence[str], *, alpha: float = ALPHA) -> None:
    """Holm-adjust the p values of `methods` against random subsets over every task they
    were compared on (target and transfer), and set each member's family verdict."""
    family = [r for r in rows if r.method in methods and r.vs_random is not None
              and not math.isnan(r.vs_random.p_value)]
    adjusted = holm([r.vs_random.p_value for r in family])
    for row, p in zip(family, adjusted, strict=True):
        row.family_p, row.family_size = p, len(family)
        row.family_verdict = family_verdict(row.vs_random.difference, p, row.higher_is_better,
                                            alpha=alpha)
