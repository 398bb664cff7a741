"""The matrix's cells as DVC sees them: which train and evaluate stages are pending, what
each runs, and recording finished ones in dvc.lock.

DVC stays the ledger: a cell is pending when `dvc status` lists it or a pending cell it reads
from (an evaluate cell after its train cell); a finished cell is recorded with `dvc commit`,
so `dvc status` and `dvc repro` see it as if `dvc repro` had run it.

Resuming (`allow_missing`): a fresh clone holds the finished cells' small outputs (subsets,
scores, metrics) but not their large ones (features, adapters). A stage whose outputs are
missing but whose command, parameters and dependencies are unchanged (`dvc repro
--allow-missing`'s rule) is finished elsewhere and is not pending. A pending cell that reads a
missing output is given it: a non-cell stage (the model, the pool) is regenerated first, a
finished train cell whose adapter is gone is trained again (said in the plan).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from naitbench.errors import ConfigError, UserError

CELL_STAGES = ("train", "train_full", "evaluate", "evaluate_full", "evaluate_base")


class UpstreamStale(UserError, RuntimeError):
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
    weight: float | None = None   # records it trains (train cells); None: unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Pending cells in dvc.yaml order, and the out-of-date stages they read that are not
    cells (to bring up to date first)."""

    cells: list[Cell] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    #: finished cells run again because a pending cell reads an output that is gone
    rerun: list[str] = field(default_factory=list)

    def rounds(self, chunk: int | None = None) -> list[list[Cell]]:
        """Cells grouped so that every cell comes after the cells it reads from.

        `chunk` None: as few rounds as possible (every train cell, then every evaluate
        cell). `chunk` N (the cells run at once): few cells in flight, so that a run
        stopped at any point has evaluated most of what it trained (a trained adapter is
        not committed to git; an unevaluated one is lost with the machine). Each round
        holds the heaviest waiting independent cell, lighter ones until they weigh (N - 1)
        times as much (so N workers stay busy), and the cells that read the previous
        round's."""
        if chunk is None:
            return self._layers()
        if chunk < 1:
            raise ConfigError(f"scale.chunk={chunk}: at least one cell per round")
        known = sorted(c.weight for c in self.cells if c.weight)
        typical = known[len(known) // 2] if known else 1.0
        weight = {c.name: c.weight or typical for c in self.cells}
        waiting = sorted((c for c in self.cells if not c.after), key=lambda c: -weight[c.name])
        dependent = [c for c in self.cells if c.after]
        placed: dict[str, int] = {}
        out: list[list[Cell]] = []
        while waiting or dependent:
            number = len(out)
            ready = [c for c in dependent
                     if all(placed.get(a, number) < number for a in c.after)]
            dependent = [c for c in dependent if c not in ready]
            batch = list(ready)
            if waiting:
                head, load = waiting.pop(0), 0.0
                batch.append(head)
                while waiting and (load < (chunk - 1) * weight[head.name]
                                   or len(batch) < chunk):
                    light = waiting.pop()
                    batch.append(light)
                    load += weight[light.name]
            elif not ready:
                raise ValueError(f"cells wait on cells not in the plan: "
                                 f"{[c.name for c in dependent]}")
            placed.update(dict.fromkeys((c.name for c in batch), number))
            out.append(batch)
        return out

    def _layers(self) -> list[list[Cell]]:
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


def plan(root: str | Path, groups: Sequence[str] = CELL_STAGES,
         allow_missing: bool = False) -> Plan:
    """Ask DVC which cells are pending in the project at `root`; `allow_missing`: a stage
    finished elsewhere (outputs missing, nothing else changed) is not (module doc)."""
    import networkx as nx
    from dvc.repo import Repo

    # DVC resolves the stages' paths against the working directory, not the repository's
    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph   # edges point from a stage to the stages it depends on
        order = list(reversed(list(nx.topological_sort(graph))))
        if allow_missing:
            # each stage against its own dvc.lock entry (nothing has run yet, so DVC's check
            # of a missing input against what an upstream stage just wrote does not apply:
            # fed stages whose statuses were read, it calls finished selections changed)
            with repo.lock:   # stage.changed reads the workspace under DVC's lock
                stale = {stage.addressing for stage in order
                         if stage.changed(allow_missing=True)}
        else:
            stale = set(repo.status())
        pending: dict[Any, bool] = {}
        for stage in order:   # dependencies first
            upstream_pending = any(pending.get(dep) for dep in graph.successors(stage))
            pending[stage] = stage.addressing in stale or upstream_pending
        regenerate, rerun = _missing_inputs(graph, order, pending, groups)
        cells = [s for s in order if is_cell(s.addressing, groups) and pending[s]]
        upstream = sorted({dep.addressing for cell in cells for dep in nx.descendants(graph, cell)
                           if not is_cell(dep.addressing, groups) and pending[dep]}
                          | {s.addressing for s in regenerate})
        index = {s.addressing: i for i, s in enumerate(repo.index.stages)}
        cells.sort(key=lambda s: index[s.addressing])
        names, top = {s.addressing for s in cells}, Path(repo.root_dir)
        return Plan([Cell(s.addressing, _command(s.cmd), str(Path(s.wdir).relative_to(top)),
                          tuple(str(Path(o.fs_path).relative_to(top))
                                for o in s.outs if not o.persist),
                          tuple(d.addressing for d in graph.successors(s)
                                if d.addressing in names),
                          _records(s) if s.addressing.startswith("train") else None)
                     for s in cells], upstream, rerun=sorted(s.addressing for s in rerun))


def _missing_inputs(graph: Any, order: list, pending: dict, groups: Sequence[str],
                    ) -> tuple[set, set]:
    """Stages to run again because a pending stage reads an output of theirs that is not in
    the workspace: non-cell stages (regenerated before the cells) and finished cells (made
    pending here, in `pending`); repeated until nothing pending misses an input. A pending
    cell misses any output it reads; a pending stage downstream of the cells (the report)
    only those that travel in git (`cache: false`: scores, manifests, training metrics),
    since the adapters a clone lacks are not what it reads."""
    regenerate, rerun = set(), set()
    changed = True
    while changed:
        changed = False
        for stage in order:
            producers = list(graph.successors(stage))
            cell = is_cell(stage.addressing, groups)
            if not pending[stage] or not (
                    cell or any(is_cell(p.addressing, groups) for p in producers)):
                continue
            for producer in producers:
                if not _reads_a_missing_output(stage, producer, everything=cell):
                    continue
                if not is_cell(producer.addressing, groups):
                    regenerate.add(producer)
                elif not pending[producer]:
                    pending[producer] = changed = True
                    rerun.add(producer)
    return regenerate, rerun


def _reads_a_missing_output(reader: Any, producer: Any, everything: bool) -> bool:
    """Whether `reader` depends on an output of `producer` that is not in the workspace: a
    dependency inside that output, or (`everything`, else only outputs kept in git) the
    output inside a dependency directory."""
    for dep in reader.deps:
        for out in producer.outs:
            if _within(dep.fs_path, out.fs_path) and not Path(dep.fs_path).exists():
                return True
            if (_within(out.fs_path, dep.fs_path) and not Path(out.fs_path).exists()
                    and (everything or not out.use_cache)):
                return True
    return False


def _within(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/")


def _records(stage: Any) -> float | None:
    """Records a train cell trains on: the lines of the JSONL files it reads (its subset
    file; the full-data cell, which reads none, its pool directory's); None when none is in
    the workspace."""
    def lines(files: list[Path]) -> int:
        count = 0
        for file in files:
            if file.suffix == ".jsonl" and file.is_file():
                with file.open("rb") as handle:
                    count += sum(1 for _ in handle)
        return count
    paths = [Path(dep.fs_path) for dep in stage.deps]
    total = lines([p for p in paths if not p.is_dir()]) or lines(
        [f for p in paths if p.is_dir() for f in sorted(p.glob("*.jsonl"))])
    return float(total) or None


def _command(cmd: str | list[str]) -> str:
    """A stage's `cmd` (a string, or a list DVC runs one after another) as one shell line."""
    return cmd if isinstance(cmd, str) else " && ".join(cmd)


def reproduce_upstream(root: str | Path, stages: Sequence[str]) -> None:
    """`dvc repro` of the out-of-date stages the cells read, in this process's environment
    (each with every input it declares: missing ones are regenerated first)."""
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
