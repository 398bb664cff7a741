"""The matrix's cells through Hydra's real launchers (naitbench.scale): a reduced smoke matrix
(NAIT and one random subset, so 7 cells: 3 trainings, 4 scorings) prepared once up to its
subsets, then run by a sequential `dvc repro`, by joblib with 2 workers and by submitit's
local executor; every run must end with the same scores and DVC's bookkeeping exact.

Every run gives each cell one intra-op thread (`scale.threads=1`, what `make repro` gives two
cells on two cores; the sequential reference the same through the thread variables): scores
are exact only at equal thread counts, since the matrix kernels split their sums by thread
(bf16 training on an AMX CPU moved a score by 2.5e-7 between one thread and two)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repo_copy, run_ok
from omegaconf import OmegaConf

from naitbench.scale.job import cell_env

pytestmark = pytest.mark.slow

MATRIX = ["runs.targeted=[nait]", "runs.untargeted=[]", "runs.random_seeds=[0]"]
THREADS = 1   # intra-op threads per cell in every run (module doc)
CELLS = {"train_full@0", "train@nait-code-r0.1-s0-seed0", "train@random-r0.1-s0-seed0",
         "evaluate_base", "evaluate_full@0", "evaluate@nait-code-r0.1-s0-seed0",
         "evaluate@random-r0.1-s0-seed0"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_root) -> tuple[Path, dict]:
    """A smoke project with everything up to the subsets reproduced (cells all pending)."""
    copy, env = repo_copy(tmp_path_factory.mktemp("scale"))
    run_ok([sys.executable, "-m", "naitbench.config", "dump", "profile=smoke",
            f"paths.data_root={data_root}", "tracking=disabled", *MATRIX], copy, env)
    run_ok([sys.executable, "-m", "dvc", "repro", "select@nait-code-0.1",
            "select_random@0.1-0"], copy, env)
    return copy, env


def _clone(prepared: tuple[Path, dict], where: Path) -> tuple[Path, dict]:
    """A copy of the prepared project (its DVC cache included)."""
    source, env = prepared
    target = where / "project"
    shutil.copytree(source, target, symlinks=True)
    return target, {**env, "PYTHONPATH": f"{target / 'src'}:{target}"}


def _scores(project: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(project / "data" / "scores")): json.loads(p.read_text())
            for p in (project / "data" / "scores").rglob("metrics.json")}


def _stale(project: Path, env: dict) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project,
                         env=env, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _scale(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "naitbench.scale", f"scale.threads={THREADS}",
                           *args], cwd=project, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reference_project(prepared, tmp_path_factory) -> Path:
    """A sequential `dvc repro` of the same matrix, uninterrupted (hash seed 1)."""
    project, env = _clone(prepared, tmp_path_factory.mktemp("sequential"))
    out = run_ok([sys.executable, "-m", "dvc", "repro"], project,
                 {**cell_env(env, THREADS, None), "PYTHONHASHSEED": "1"})
    assert all(f"Running stage '{cell}'" in out for cell in CELLS)
    return project


@pytest.fixture(scope="module")
def reference(reference_project) -> dict[str, dict]:
    """Scores of the uninterrupted sequential run."""
    scores = _scores(reference_project)
    assert len(scores) == 4
    return scores


def _lock_outs(project: Path) -> dict[str, str]:
    """Every output's hash in dvc.lock (md5 of a file, or of a directory's listing)."""
    import yaml

    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage["outs"]}


def test_dry_run_lists_the_pending_cells_in_rounds(prepared, tmp_path):
    project, env = _clone(prepared, tmp_path)
    result = _scale(project, env, "scale.dry_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = [line.split(": ", 1)[1].split() for line in result.stdout.splitlines()
              if line.startswith("round ")]
    assert [set(r) for r in rounds] == [{c for c in CELLS if not c.startswith("evaluate@")
                                        and c != "evaluate_full@0"},
                                       {c for c in CELLS if c.startswith("evaluate@")}
                                       | {"evaluate_full@0"}]
    assert _stale(project, env) >= CELLS   # nothing ran


def test_joblib_two_workers_then_dvc_repro_runs_only_the_report(prepared, reference, tmp_path):
    project, env = _clone(prepared, tmp_path)
    result = _scale(project, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "finished and committed: 7 cells" in result.stdout
    assert _scores(project) == reference
    assert _stale(project, env) == {"report"}
    repro = run_ok([sys.executable, "-m", "dvc", "repro"], project, env)
    assert [line for line in repro.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'report':"]
    rerun = _scale(project, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "nothing to submit" in rerun.stdout and "Launching jobs" not in rerun.stderr


def test_submitit_local_with_a_failing_cell(prepared, reference, tmp_path):
    """A bad value for the full-pool row only (train.full_epochs=0): train_full@0 fails and is
    reported with its log, evaluate_full@0 (which reads it) is skipped, the others finish."""
    project, env = _clone(prepared, tmp_path)
    params = OmegaConf.load(project / "params.yaml")
    params.train.full_epochs = 0
    OmegaConf.save(params, project / "params.yaml")
    result = _scale(project, env, "hydra/launcher=submitit_local",
                    "hydra.launcher.timeout_min=30")
    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith("FAILED train_full@0: log ")
    log = Path(failed[0].split(": log ", 1)[1])
    assert "train.epochs=0: must be a positive integer" in log.read_text()
    assert "SKIPPED evaluate_full@0: it reads train_full@0" in result.stdout
    assert "finished and committed: 5 cells" in result.stdout
    scores = _scores(project)
    assert "full/seed0" not in scores
    assert scores == {k: v for k, v in reference.items() if k != "full/seed0"}
    assert _stale(project, env) == {"train_full@0", "evaluate_full@0", "report"}


def test_a_terminated_sweep_commits_the_cells_that_finished(prepared, tmp_path):
    """SIGTERM (a session's end) during a round: the cells that finished before it are
    committed to dvc.lock, the one running is not, and the sweep exits with 143."""
    import signal
    import time

    project, env = _clone(prepared, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "naitbench.scale", f"scale.threads={THREADS}",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(project.glob("logs/scale/*/results/*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, out[-3000:]
    finished = {json.loads(p.read_text())["cell"]
                for p in project.glob("logs/scale/*/results/*.json")
                if json.loads(p.read_text())["returncode"] == 0}
    assert finished and f"terminated: committing the {len(finished)} cells" in out
    stale = _stale(project, env)
    assert not finished & stale and (CELLS - finished) <= stale


def test_slurm_config_composes_and_renders_its_sbatch_script(tmp_path, monkeypatch):
    """The Slurm launcher config (conf/hydra/launcher/slurm.yaml) as hydra-submitit-launcher
    passes it to submitit, and the sbatch script submitit would submit (no cluster here)."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from naitbench.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("scale", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=a100",
            "hydra.launcher.timeout_min=90"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.sweeper._target_.endswith("CellSweeper")
    # submitit refuses to build a Slurm executor where `srun` is missing: a stand-in on PATH
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = {"timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "tasks_per_node"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": launcher[k]
                                  for k in (*base, "partition", "array_parallelism")})
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=a100", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB"):
        assert line in script


def test_gpu_slots_give_running_cells_different_devices(tmp_path):
    from naitbench.scale.job import gpu_slot

    with gpu_slot(tmp_path, 2) as first, gpu_slot(tmp_path, 2) as second:
        assert {first, second} == {"0", "1"}
        assert cell_env({"PATH": "/bin"}, 1, second)["CUDA_VISIBLE_DEVICES"] == second
    with gpu_slot(tmp_path, 2) as again:   # released when a cell ends
        assert again == "0"
    with gpu_slot(tmp_path, None) as none:
        assert none is None
    with pytest.raises(ValueError, match=r"scale\.gpus=0"), gpu_slot(tmp_path, 0):
        pass


def test_resume_on_a_fresh_clone_runs_only_what_is_unfinished(prepared, reference_project,
                                                              tmp_path, data_root):
    """Part of the matrix runs in one checkout (the random subset trained and scored, the
    base model scored, NAIT's subset trained only) and is committed to git; a clone of that
    repository (no DVC cache: no features, model or adapters) resumes with
    scale.allow_missing=true, then `dvc repro --allow-missing`. No finished cell runs again;
    NAIT's training, whose adapter is gone with the first checkout, is the one cell run twice.
    Scores, the report's rows and every output's DVC hash equal the uninterrupted run's, with
    another hash seed in every process (peft's adapter_config.json once differed by it)."""
    first, env = _clone(prepared, tmp_path / "first")
    env = {**cell_env(env, THREADS, None), "PYTHONHASHSEED": "2"}
    run_ok([sys.executable, "-m", "dvc", "repro", "evaluate@random-r0.1-s0-seed0",
            "evaluate_base", "train@nait-code-r0.1-s0-seed0"], first, env)
    run_ok(["git", "add", "-A"], first, env)
    run_ok(["git", "commit", "-qm", "part of the matrix"], first, env)
    committed = run_ok(["git", "ls-files", "data"], first, env).split()
    assert "data/scores/random-r0.1-s0/seed0/samples.jsonl" in committed
    assert "data/subsets/nait-code-r0.1-s0.jsonl" in committed
    assert not [f for f in committed if "/model/" in f or f.startswith("data/features/")]

    second = tmp_path / "second"
    run_ok(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    env = {**env, "PYTHONHASHSEED": "3", "PYTHONPATH": f"{second / 'src'}:{second}"}
    result = _scale(second, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "scale.chunk=2", "scale.allow_missing=true")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "run again, their outputs are gone and a pending cell reads them: " \
        "train@nait-code-r0.1-s0-seed0" in result.stdout
    assert "4 pending cells" in result.stdout
    assert "finished and committed: 4 cells" in result.stdout
    repro = run_ok([sys.executable, "-m", "dvc", "repro", "--allow-missing"], second, env)
    assert [line for line in repro.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'report':"]

    assert _scores(second) == _scores(reference_project)
    rows = [json.loads((p / "data" / "report" / "comparison.json").read_text())["rows"]
            for p in (second, reference_project)]
    assert rows[0] == rows[1]
    resumed, uninterrupted = _lock_outs(second), _lock_outs(reference_project)
    assert resumed.keys() == uninterrupted.keys()
    differ = {k for k, v in resumed.items() if uninterrupted[k] != v}
    # what a run records of itself: training's wall time, the git revision lm-eval and the
    # report print (the clone has a commit, the reference none); the rest byte for byte
    assert {k for k in differ if not k.startswith("data/report/")} == {
        k for k in differ if k.endswith(("train_metrics.json", "results.json"))}
    for name in differ - {k for k in differ if k.startswith("data/report/")}:
        a, b = (json.loads((p / name).read_text()) for p in (second, reference_project))
        for volatile in ("wall_time_s", "tokens_per_s", "git_hash"):
            a.pop(volatile, None), b.pop(volatile, None)
        assert a == b, name

    # A method added on the clone: kNN does its own pass and does not read the feature store
    # (a select_own stage), so nothing upstream runs but its selection: the store, finished
    # elsewhere, is not extracted again, NAIT's selection is finished, and only kNN's cells
    # run.
    run_ok([sys.executable, "-m", "naitbench.config", "dump", "profile=smoke",
            f"paths.data_root={data_root}", "tracking=disabled", *MATRIX,
            "runs.targeted=[nait,knn]"], second, env)
    nait_ids = (second / "data" / "subsets" / "nait-code-r0.1-s0.jsonl").read_bytes()
    added = _scale(second, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "scale.chunk=2", "scale.allow_missing=true")
    assert added.returncode == 0, (added.stdout[-3000:], added.stderr[-3000:])
    ran = {line for line in added.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"Running stage 'select_own@knn-code-0.1':"}
    assert (second / "data" / "subsets" / "nait-code-r0.1-s0.jsonl").read_bytes() == nait_ids
    assert "2 pending cells" in added.stdout
    assert "finished and committed: 2 cells" in added.stdout


def test_a_clone_lacking_the_models_selects_nothing_again(prepared, tmp_path, data_root):
    """An untargeted selection depends on the models directory, which git never holds: a
    clone must see it as missing (skipped by --allow-missing), not as changed (DVC's own
    .gitignore committed inside it once made it 'modified' and every such selection re-ran)."""
    first, env = _clone(prepared, tmp_path / "first")
    run_ok([sys.executable, "-m", "naitbench.config", "dump", "profile=smoke",
            f"paths.data_root={data_root}", "tracking=disabled", "runs.targeted=[nait]",
            "runs.untargeted=[length]", "runs.random_seeds=[0]"], first, env)
    run_ok([sys.executable, "-m", "dvc", "repro", "select_untargeted@length-0.1"], first, env)
    run_ok(["git", "add", "-A"], first, env)
    run_ok(["git", "commit", "-qm", "length selected"], first, env)
    assert not [f for f in run_ok(["git", "ls-files", "data/models"], first, env).split()]

    second = tmp_path / "second"
    run_ok(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    env = {**env, "PYTHONPATH": f"{second / 'src'}:{second}"}
    assert not (second / "data" / "models").exists()
    dry = run_ok([sys.executable, "-m", "dvc", "repro", "--allow-missing", "--dry",
                  "select_untargeted@length-0.1"], second, env)
    assert "Running stage" not in dry, dry
    plan = run_ok([sys.executable, "-m", "naitbench.scale", f"scale.threads={THREADS}",
                   "scale.dry_run=true", "scale.allow_missing=true"], second, env)
    assert "select_untargeted@length-0.1" not in plan, plan


def test_a_finished_cell_whose_git_kept_scores_are_gone_is_scored_again(prepared, tmp_path):
    """The report reads every score directory: when a finished cell's scores (kept in git)
    are missing while other cells are pending, the plan runs that cell again rather than let
    the report run short of a model; an adapter missing on a clone (not kept in git, not
    read by the report) does not make its training run again."""
    from naitbench.scale.cells import plan

    project, env = _clone(prepared, tmp_path)
    run_ok([sys.executable, "-m", "dvc", "repro", "evaluate_base",
            "evaluate@random-r0.1-s0-seed0"], project, cell_env(env, THREADS, None))
    shutil.rmtree(project / "data" / "scores" / "base")
    shutil.rmtree(project / "data" / "runs" / "random-r0.1-s0" / "seed0" / "model")
    found = plan(project, allow_missing=True)
    assert found.rerun == ["evaluate_base"]
    names = {c.name for c in found.cells}
    assert "evaluate_base" in names
    assert not names & {"train@random-r0.1-s0-seed0", "evaluate@random-r0.1-s0-seed0"}
    assert "train@nait-code-r0.1-s0-seed0" in names   # never ran: still pending
