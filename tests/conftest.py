"""Shared fixtures: the tiny random Llama, the converted embedded model, composed configs and
a prepared smoke-profile data directory. Everything heavy is built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("NAITBENCH_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The local data mirror (../shared/data unless NAITBENCH_DATA_ROOT says otherwise)."""
    if not DATA_ROOT.exists():
        pytest.fail(f"data mirror not found at {DATA_ROOT}; set NAITBENCH_DATA_ROOT")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 4-layer random Llama with the embedded model's tokenizer (seconds to build)."""
    from naitbench.config import compose
    from naitbench.models.prepare import prepare_model

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    cfg = compose(["profile=smoke", f"model.dir={out}"])
    return Path(prepare_model(cfg.model))


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from its GGUF (about 30 s), once per session.

    NAITBENCH_EMBEDDED_DIR may point at an already converted directory to save the time.
    """
    given = os.environ.get("NAITBENCH_EMBEDDED_DIR")
    if given:
        return Path(given)
    from naitbench.config import compose
    from naitbench.models.prepare import prepare_model

    out = tmp_path_factory.mktemp("models") / "smollm2"
    cfg = compose(["profile=embedded", f"model.dir={out}"])
    return Path(prepare_model(cfg.model))


def smoke_overrides(data_dir: Path, model_dir: Path, data_root: Path) -> list[str]:
    """Overrides that point the smoke profile at temporary directories."""
    return ["profile=smoke", f"paths.data_dir={data_dir}", f"model.dir={model_dir}",
            f"paths.data_root={data_root}"]


@pytest.fixture(scope="session")
def smoke_cfg(tmp_path_factory, tiny_model_dir, data_root):
    """The smoke profile composed onto a temporary data directory and the tiny model."""
    from naitbench.config import compose

    data_dir = tmp_path_factory.mktemp("smoke-data")
    return compose(smoke_overrides(data_dir, tiny_model_dir, data_root))


@pytest.fixture(scope="session")
def prepared_smoke(smoke_cfg) -> Path:
    """The smoke profile's prepare_data outputs (pool and targets); returns the data dir."""
    from naitbench.data.prepare import prepare

    prepare(smoke_cfg)
    return Path(smoke_cfg.paths.data_dir)


def repo_copy(tmp_path: Path) -> tuple[Path, dict]:
    """A fresh git repository holding this checkout's files (without the results of its own
    runs: data/, dvc.lock), and the environment that runs the venv's DVC stages in it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / "repo"
    for rel in files:
        kept = rel.endswith(".gitignore") or rel.startswith("data/own/")
        if (rel.startswith("data/") and not kept) or rel == "dvc.lock":
            continue
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}", "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GIT_AUTHOR_NAME": "smoke",
           "GIT_AUTHOR_EMAIL": "smoke@localhost", "GIT_COMMITTER_NAME": "smoke",
           "GIT_COMMITTER_EMAIL": "smoke@localhost"}
    run_ok(["git", "init", "-q"], copy, env)
    return copy, env


def run_ok(args: list[str], cwd: Path, env: dict) -> str:
    """Run a command that must succeed; its output (stdout then stderr)."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr
