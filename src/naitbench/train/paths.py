"""Where a trained run lives, shared by the train stage, the evaluate stage and dvc.yaml.

data/runs/<subset>/seed<seed>/{model/, train_metrics.json}; resume checkpoints in
data/checkpoints/<subset>/seed<seed>/ (outside the DVC output, which DVC clears before a
stage re-runs, so that an interrupted `dvc repro` resumes).
"""

from __future__ import annotations

from pathlib import Path


def run_dir(data_dir: str | Path, subset: str, seed: int) -> Path:
    return Path(data_dir) / "runs" / subset / f"seed{seed}"


def checkpoint_dir(data_dir: str | Path, subset: str, seed: int) -> Path:
    return Path(data_dir) / "checkpoints" / subset / f"seed{seed}"
