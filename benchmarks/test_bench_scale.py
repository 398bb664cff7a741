"""Two cells at once against one after the other, on this machine's cores: two cells of the
same stage run concurrently with one intra-op thread each, against the same two run one after
another with two threads each, with the environment naitbench.scale gives its jobs
(`scale.threads`). Small models use two threads poorly, so splitting the cores between cells
can finish the pair sooner; `make repro` runs the matrix so (CELLS=2), and the estimate
divides its train and evaluate stages by the measured ratios (`estimate.cells_gain`).

- train cells (`python -m naitbench.train`): NAITBENCH_BENCH_N pool records each (the first
  N and the next N), one epoch;
- evaluate cells (`python -m naitbench.evaluate`, the base model): N held-out items of every
  task of the profile each, into their own data directories.
The embedded profile's settings on a real model (NAITBENCH_BENCH_MODEL), the smoke profile's
on the tiny one; NAITBENCH_BENCH_PRECISION=fp32 trains in fp32 on a native-bf16 CPU too (what
an AVX2-only CPU runs). The ratio is stored in extra_info["speedup"] (> 1: concurrent wins).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, N, make_data_dir

from naitbench.io import read_jsonl, write_jsonl
from naitbench.scale.job import cell_env

CELLS = ("bench-a", "bench-b")
#: train.precision of the train cells (unset: the profile's, `auto`)
PRECISION = os.environ.get("NAITBENCH_BENCH_PRECISION")


def _data_dir(source: Path, out: Path, target: str) -> Path:
    """The first 2N pool records and two subsets of N records each."""
    make_data_dir(source, out, 2 * N, target, 1)
    pool = read_jsonl(out / "pool" / "pool.jsonl")
    for k, name in enumerate(CELLS):
        write_jsonl(out / "subsets" / f"{name}.jsonl", [{"id": r["id"]}
                                                          for r in pool[k * N:(k + 1) * N]])
    return out


HYDRA = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled",
         "hydra/hydra_logging=disabled"]


def _profile() -> str:
    return "embedded" if os.environ.get("NAITBENCH_BENCH_MODEL") else "smoke"


def _train_command(model: Path, data_dir: Path, subset: str) -> list[str]:
    return [sys.executable, "-m", "naitbench.train", f"profile={_profile()}", f"model.dir={model}",
            f"paths.data_dir={data_dir}", "tracking=disabled", f"train.subset={subset}",
            "train.seed=0", "train.epochs=1",
            *([f"train.precision={PRECISION}"] if PRECISION else []), *HYDRA]


def _evaluate_command(model: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "naitbench.evaluate", f"profile={_profile()}",
            f"model.dir={model}", f"paths.data_dir={data_dir}", "tracking=disabled",
            "eval.subset=null", f"eval.limit={N}", *HYDRA]


def _run(commands: list[list[str]], threads: int, concurrent: bool, cwd: Path) -> float:
    env = cell_env(os.environ, threads, None)
    began = time.perf_counter()
    if concurrent:
        procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for c in commands]
        for proc in procs:
            _, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
    else:
        for c in commands:
            subprocess.run(c, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def _compare(benchmark, commands: list[list[str]], fresh: list[Path]) -> None:
    cores = os.cpu_count() or 1
    sequential = _run(commands, cores, concurrent=False, cwd=REPO)
    for path in fresh:   # checkpoints or partial scores would let the second pass resume
        subprocess.run(["rm", "-rf", str(path)], check=True)
    concurrent = benchmark.pedantic(_run, args=(commands, max(1, cores // 2), True, REPO),
                                    rounds=1, iterations=1)
    benchmark.extra_info.update({
        "cores": cores, "per_cell": N, "train_precision": PRECISION or "profile",
        "sequential_s": sequential,
        "concurrent_s": concurrent, "speedup": sequential / concurrent})
    assert sequential > 0 and concurrent > 0


def test_two_train_cells_at_once_vs_one_after_another(benchmark, bench_model, bench_source,
                                                      bench_target, tmp_path):
    data = _data_dir(bench_source, tmp_path / "data", bench_target)
    _compare(benchmark, [_train_command(bench_model, data, name) for name in CELLS],
             [data / "checkpoints", data / "runs"])


def test_two_evaluate_cells_at_once_vs_one_after_another(benchmark, bench_model, bench_source,
                                                         tmp_path):
    dirs = [tmp_path / name for name in CELLS]
    for data in dirs:   # each cell its own scores directory, the same held-out sets
        data.mkdir()
        (data / "targets").symlink_to(bench_source / "targets", target_is_directory=True)
    _compare(benchmark, [_evaluate_command(bench_model, data) for data in dirs],
             [data / "scores" for data in dirs])
