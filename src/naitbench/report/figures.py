"""Figures for the report: every replicate shown, so seed spread is visible at a glance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from naitbench.report.compare import Row
from naitbench.report.results import BASE, REFERENCE_FULL, REFERENCE_RANDOM


def arm_label(row: Row) -> str:
    """Short arm name: method, target and ratio where they apply."""
    parts = [row.method]
    if row.target:
        parts.append(row.target)
    if row.ratio is not None and row.method not in (BASE, REFERENCE_FULL):
        parts.append(f"{row.ratio:g}")
    return "/".join(parts)


def task_figure(rows: list[Row], task: str, out: Path) -> Path:
    """Dot plot of one task: one dot per replicate, a bar at each arm's mean."""
    rows = [r for r in rows if r.task == task]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(rows) + 2), 3.6))
    for x, row in enumerate(rows):
        colour = {REFERENCE_RANDOM: "tab:gray", BASE: "tab:red",
                  REFERENCE_FULL: "tab:green"}.get(row.method, "tab:blue")
        ax.scatter([x] * len(row.values), row.values, color=colour, s=18, zorder=3)
        ax.hlines(row.mean, x - 0.3, x + 0.3, color=colour, linewidth=2)
    ax.set_xticks(range(len(rows)), [arm_label(r) for r in rows], rotation=30, ha="right")
    better = "higher" if rows and rows[0].higher_is_better else "lower"
    ax.set_ylabel(f"{rows[0].metric if rows else ''} ({better} is better)")
    ax.set_title(task)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
