"""The report's main figure: one panel per task, one dot per replicate (selection or
training seed) and the random subsets' spread as a band, so seed noise is visible at a glance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from naitbench.io import atomic_open
from naitbench.report.compare import Row
from naitbench.report.names import (
    arm_names,
    arm_order,
    task_heading,
    task_order,
    unit,
)
from naitbench.report.results import BASE, HEADLINE_METHODS, REFERENCE_FULL, REFERENCE_RANDOM

COLOURS = {REFERENCE_RANDOM: "dimgray", BASE: "tab:red", REFERENCE_FULL: "tab:green",
           **dict(zip(HEADLINE_METHODS, ("tab:blue", "tab:orange"), strict=False))}
OTHER_COLOUR = "slategray"


def _panel(ax: plt.Axes, rows: list[Row], task: str, names: dict[tuple, str]) -> None:
    mine = sorted((r for r in rows if r.task == task), key=arm_order, reverse=True)
    for random in (r for r in mine if r.method == REFERENCE_RANDOM):
        ax.axvspan(min(random.values), max(random.values), color="lightgray", alpha=0.6,
                   zorder=0, label="random subsets: range")
        ax.axvline(random.mean, color="dimgray", linestyle="--", linewidth=1, zorder=1,
                   label="random subsets: mean")
    for y, row in enumerate(mine):
        colour = COLOURS.get(row.method, OTHER_COLOUR)
        offsets = [0.0] if row.n == 1 else [0.24 * (i / (row.n - 1) - 0.5) for i in range(row.n)]
        ax.scatter(row.values, [y + o for o in offsets], color=colour, s=22, zorder=3,
                   edgecolors="white", linewidths=0.5)
        ax.vlines(row.mean, y - 0.3, y + 0.3, color=colour, linewidth=2, zorder=2)
    ax.set_yticks(range(len(mine)), [names[r.arm] for r in mine])
    higher = mine[0].higher_is_better if mine else True
    ax.set_xlabel(f"{unit(mine[0].metric) if mine else ''}  "
                  f"({'higher' if higher else 'lower'} is better: "
                  f"{'→' if higher else '←'})")
    ax.set_title(f"{task_heading(rows, task)}\n{task}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def main_figure(rows: list[Row], out: Path) -> Path:
    """Every task side by side: dots are replicates, bars their mean, the grey band the range
    of the random subsets and the dashed line their mean."""
    tasks = task_order(rows)
    names = arm_names(rows)
    arms = max((sum(r.task == t for r in rows) for t in tasks), default=1)
    fig, axes = plt.subplots(1, max(len(tasks), 1), squeeze=False,
                             figsize=(5.2 * max(len(tasks), 1) + 1.5, 0.32 * arms + 1.6))
    for ax, task in zip(axes[0], tasks, strict=False):
        _panel(ax, rows, task, names)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique),
                   frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.06 if unique else 0, 1, 1))
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return out
