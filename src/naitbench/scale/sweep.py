"""The sweep over the pending cells: bring what they read up to date, launch them round by
round through the configured Hydra launcher (train cells, then the evaluate cells that read
them), commit each round's finished cells, and report every failed cell with its log."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from naitbench.errors import ConfigError
from naitbench.scale.cells import Plan, UpstreamStale, commit, plan, reproduce_upstream
from naitbench.scale.job import PLAN_FILE, result_path

UPSTREAM = ("repro", "error")
MAX_UPSTREAM_PASSES = 3
Launch = Callable[[Sequence[Sequence[str]], int], Any]


class CellsFailed(RuntimeError):
    """Some cells failed or were skipped; the others finished and are committed."""


class Terminated(BaseException):
    """SIGTERM (a session's end, a preempted machine) arrived while a round ran."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)     # cell -> log path
    skipped: dict[str, str] = field(default_factory=dict)    # cell -> the failed cell it reads

    def summary(self) -> str:
        lines = [f"finished and committed: {len(self.finished)} cells"]
        lines += [f"FAILED {name}: log {log}" for name, log in self.failed.items()]
        lines += [f"SKIPPED {name}: it reads {cause}, which failed"
                  for name, cause in self.skipped.items()]
        return "\n".join(lines)


def pending_plan(root: Path, scale: DictConfig) -> Plan:
    """The pending cells, after `dvc repro` of the stale stages they read (scale.upstream);
    `scale.allow_missing`: cells finished elsewhere are not pending (cells.plan)."""
    if scale.upstream not in UPSTREAM:
        raise ConfigError(f"scale.upstream={scale.upstream!r}: use one of {UPSTREAM}")
    groups, missing = list(scale.stages), bool(scale.get("allow_missing", False))
    found = plan(root, groups, missing)
    if found.rerun:
        print(f"run again, their outputs are gone and a pending cell reads them: "
              f"{' '.join(found.rerun)}", flush=True)
    if found.upstream:
        if scale.upstream == "error":
            raise UpstreamStale(f"stages the cells read are out of date: {found.upstream}; run "
                                f"`dvc repro {' '.join(found.upstream)}` or scale.upstream=repro")
        for _ in range(MAX_UPSTREAM_PASSES):   # a regenerated input can make more stages stale
            print(f"bringing up to date first: {' '.join(found.upstream)}", flush=True)
            reproduce_upstream(root, found.upstream)
            found = plan(root, groups, missing)
            if not found.upstream:
                break
        else:
            raise UpstreamStale(f"still out of date after {MAX_UPSTREAM_PASSES} passes: "
                                f"{found.upstream}")
    return found


def run_sweep(config: DictConfig, arguments: Sequence[str], launch: Launch) -> Outcome:
    """Launch the pending cells (`launch(job_overrides, first_job_index)` is the launcher's,
    set up with this same `config`, whose hydra.sweep.dir is made absolute here); raises
    CellsFailed, after every runnable cell has run, if any failed."""
    root = Path(os.getcwd()).resolve()
    cells = pending_plan(root, config.scale)
    if not cells.cells:
        print("nothing to submit: every cell is up to date", flush=True)
        return Outcome()
    sweep_dir = (root / str(config.hydra.sweep.dir)).resolve()
    with open_dict(config):   # one absolute directory for every job, wherever it runs
        config.hydra.sweep.dir = str(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PLAN_FILE).write_text(json.dumps(
        {"root": str(root), "cells": {c.name: c.to_json() for c in cells.cells}}, indent=1))
    rounds = cells.rounds(config.scale.get("chunk"))
    print(f"{len(cells.cells)} pending cells in {len(rounds)} rounds; logs under {sweep_dir}",
          flush=True)
    if config.scale.dry_run:
        for number, batch in enumerate(rounds):
            print(f"round {number}: " + " ".join(c.name for c in batch), flush=True)
        return Outcome()
    outcome = Outcome()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _run_rounds(rounds, root, sweep_dir, arguments, launch, outcome)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(outcome.summary(), flush=True)
    if outcome.failed or outcome.skipped:
        raise CellsFailed(outcome.summary())
    return outcome


def _run_rounds(rounds: list, root: Path, sweep_dir: Path, arguments: Sequence[str],
                launch: Launch, outcome: Outcome) -> None:
    """Launch round after round, committing each round's finished cells; on SIGTERM, commit
    the cells of the round that finished before it and exit with status 143, so a stopped
    run loses only the cells that were running."""
    job_index = 0
    for batch in rounds:
        runnable = []
        for cell in batch:
            cause = next((a for a in cell.after if a in outcome.failed or a in outcome.skipped),
                         None)
            if cause is None:
                runnable.append(cell)
            else:
                outcome.skipped[cell.name] = cause
        if not runnable:
            continue
        stopped = False
        try:
            launch([[*arguments, f"cell='{c.name}'"] for c in runnable], job_index)
        except Terminated:
            stopped = True
        except Exception as error:   # a job that died; the result files say which
            print(f"the launcher reported: {error!r}", flush=True)
        job_index += len(runnable)
        done = []
        for cell in runnable:
            result = _result(sweep_dir, cell.name)
            if result is not None and result["returncode"] == 0:
                done.append(cell.name)
            else:
                outcome.failed[cell.name] = (result or {}).get(
                    "log", f"no result: see the launcher's logs under {sweep_dir}")
        if stopped:
            print(f"terminated: committing the {len(done)} cells that finished first",
                  flush=True)
        left = commit(root, done)
        if left:
            raise RuntimeError(f"dvc status still lists committed cells: {left}")
        outcome.finished += done
        print(f"committed: {' '.join(done) or 'none'}", flush=True)
        if stopped:
            raise SystemExit(143)


def _result(sweep_dir: Path, cell: str) -> dict[str, Any] | None:
    path = result_path(sweep_dir, cell)
    return json.loads(path.read_text()) if path.exists() else None
