"""The matrix's cells as DVC sees them: which train and evaluate stages are pending, what
each runs, and recording finished ones in dvc.lock.

DVC stays the ledger: a cell is pending when `dvc status` lists it or a pending cell it reads
from (an evaluate cell after its train cell); a finished cell is recorded with `dvc commit`,
so `dvc status` and `dvc repro` see it as if `dvc repro` had run it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CELL_STAGES = ("train", "train_full", "evaluate", "evaluate_full", "evaluate_base")


class UpstreamStale(RuntimeError):
    """Stages the pending cells read (features, selection) are out of date."""


@dataclass(frozen=True)
class Cell:
    """One DVC stage of the matrix: `cmd` runs in `wdir`; `outs` are removed first (as `dvc
    repro` removes a stage's non-persistent outputs); `after` names the pending cells whose
    outputs it reads."""

    name: str
    cmd: str
    wdir: str
    outs: tuple[str, ...]
    after: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Pending cells in dvc.yaml order, and the out-of-date stages they read that are not
    cells (to bring up to date first)."""

    cells: list[Cell] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)

    def rounds(self) -> list[list[Cell]]:
        """Cells grouped so that every cell comes after the cells it reads from."""
        placed: dict[str, int] = {}
        for cell in self.cells:   # dvc.yaml order: a stage's upstream stages come first
            placed[cell.name] = 1 + max((placed[a] for a in cell.after), default=-1)
        out: list[list[Cell]] = [[] for _ in range(max(placed.values(), default=-1) + 1)]
        for cell in self.cells:
            out[placed[cell.name]].append(cell)
        return out


def is_cell(name: str, groups: Sequence[str] = CELL_STAGES) -> bool:
    """Whether a DVC stage address (`train@<key>`, `evaluate_base`) is one of the cell stages."""
    return name.split("@", 1)[0] in groups


def plan(root: str | Path, groups: Sequence[str] = CELL_STAGES) -> Plan:
    """Ask DVC which cells are pending in the project at `root`."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stale = set(repo.status())
        graph = repo.index.graph   # edges point from a stage to the stages it depends on
        order = list(reversed(list(nx.topological_sort(graph))))
        pending: dict[Any, bool] = {}
        for stage in order:   # dependencies first
            upstream_pending = any(pending.get(dep) for dep in graph.successors(stage))
            pending[stage] = stage.addressing in stale or upstream_pending
        cells = [s for s in order if is_cell(s.addressing, groups) and pending[s]]
        upstream = sorted({dep.addressing for cell in cells for dep in nx.descendants(graph, cell)
                           if not is_cell(dep.addressing, groups) and pending[dep]})
        index = {s.addressing: i for i, s in enumerate(repo.index.stages)}
        cells.sort(key=lambda s: index[s.addressing])
        names, top = {s.addressing for s in cells}, Path(repo.root_dir)
        return Plan([Cell(s.addressing, _command(s.cmd), str(Path(s.wdir).relative_to(top)),
                          tuple(str(Path(o.fs_path).relative_to(top))
                                for o in s.outs if not o.persist),
                          tuple(d.addressing for d in graph.successors(s)
                                if d.addressing in names))
                     for s in cells], upstream)


def _command(cmd: str | list[str]) -> str:
    """A stage's `cmd` (a string, or a list DVC runs one after another) as one shell line."""
    return cmd if isinstance(cmd, str) else " && ".join(cmd)


def reproduce_upstream(root: str | Path, stages: Sequence[str]) -> None:
    """`dvc repro` of the out-of-date stages the cells read, in this process's environment."""
    subprocess.run([sys.executable, "-m", "dvc", "repro", *stages], cwd=root, check=True)


def commit(root: str | Path, names: Sequence[str]) -> list[str]:
    """Record finished cells in dvc.lock and the cache (`dvc commit -f`); returns those that
    `dvc status` still lists afterwards (none when the bookkeeping is exact)."""
    from dvc.repo import Repo

    if not names:
        return []
    with Repo(str(root)) as repo:
        for name in names:
            repo.commit(name, force=True)
        return sorted(set(repo.status(targets=list(names))))
