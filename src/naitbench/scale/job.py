"""What every launched job runs: one cell's stage command, exactly as `dvc repro` would run
it, with its output in the job's log file and its exit status in a result file the sweep
reads (so a job that dies is told apart from one that failed)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from naitbench.errors import ConfigError

PLAN_FILE = "cells.json"
RESULTS_DIR = "results"
LOG_FILE = "cell.log"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class CellFailed(RuntimeError):
    """A cell's command exited with an error; the message names the cell and its log."""


def result_path(sweep_dir: str | Path, cell: str) -> Path:
    return Path(sweep_dir) / RESULTS_DIR / f"{cell}.json"


def cell_env(base: Mapping[str, str], threads: int | None, gpu: str | None) -> dict[str, str]:
    """The stage's environment: this interpreter's bin directory first (the stage's `python`
    is this venv's), `threads` intra-op threads, `gpu` the one visible device."""
    env = {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"scale.threads={threads!r}: a positive integer or null")
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


@contextlib.contextmanager
def gpu_slot(slots_dir: Path, gpus: int | None, poll_s: float = 2.0) -> Iterator[str | None]:
    """Hold one of `gpus` devices for the duration of a cell (an exclusive lock file per
    device, released when the process ends, however it ends); None: no GPU handling."""
    if gpus is None:
        yield None
        return
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ConfigError(f"scale.gpus={gpus!r}: a positive integer (devices on the node) or null")
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for device in range(gpus):
            handle = open(slots_dir / f"gpu{device}.lock", "w")  # noqa: SIM115 (held while running)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield str(device)
            finally:
                handle.close()
            return
        time.sleep(poll_s)


def run_cell(cfg: DictConfig) -> str:
    """Hydra task function: run the cell `cfg.cell` of the sweep's plan; returns its log path,
    raises CellFailed when the command fails."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    plan = json.loads((sweep_dir / PLAN_FILE).read_text())
    if cfg.cell not in plan["cells"]:
        raise ValueError(f"cell={cfg.cell!r} is not pending in {sweep_dir / PLAN_FILE}; "
                         f"pending: {sorted(plan['cells'])}")
    cell = plan["cells"][cfg.cell]
    root = Path(plan["root"])
    log = Path(hydra_cfg.runtime.output_dir) / LOG_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.time()
    with gpu_slot(sweep_dir / "gpu-slots", cfg.scale.gpus) as gpu:
        env = cell_env(os.environ, cfg.scale.threads, gpu)
        for out in cell["outs"]:
            _remove(root / out)
        with open(log, "w") as stream:
            stream.write(f"# {cfg.cell}: {cell['cmd']}\n")
            stream.flush()
            code = subprocess.run(cell["cmd"], shell=True, cwd=root / cell["wdir"], env=env,
                                  stdout=stream, stderr=subprocess.STDOUT).returncode
    result: dict[str, Any] = {"cell": cfg.cell, "returncode": code, "log": str(log),
                              "gpu": gpu, "wall_time_s": round(time.time() - began, 3)}
    path = result_path(sweep_dir, cfg.cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    if code:
        raise CellFailed(f"{cfg.cell} exited with status {code}; log: {log}")
    return str(log)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
