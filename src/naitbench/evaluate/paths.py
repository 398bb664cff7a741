"""Which model directory a scored row loads, and where its scores go."""

from __future__ import annotations

from pathlib import Path

BASE = "base"


def scores_dir(data_dir: str | Path, subset: str | None, seed: int) -> Path:
    """data/scores/base, or data/scores/<subset>/seed<seed> for a trained run."""
    if subset is None:
        return Path(data_dir) / "scores" / BASE
    return Path(data_dir) / "scores" / subset / f"seed{seed}"


def resume_dir(data_dir: str | Path, subset: str | None, seed: int) -> Path:
    """Finished tasks of an interrupted evaluation: data/checkpoints/eval/<row>, outside the
    DVC output (which DVC clears before a stage re-runs)."""
    row = Path(BASE) if subset is None else Path(subset) / f"seed{seed}"
    return Path(data_dir) / "checkpoints" / "eval" / row


def resolve_model(base_dir: str | Path, run_model_dir: str | Path | None
                  ) -> tuple[Path, Path | None]:
    """(pretrained, adapter) for lm-eval: the base model alone (no run), the base model plus
    a LoRA adapter, or a fully fine-tuned model directory."""
    if run_model_dir is None:
        return Path(base_dir), None
    run_model_dir = Path(run_model_dir)
    if not run_model_dir.exists():
        raise FileNotFoundError(f"trained model {run_model_dir} does not exist: run the train "
                                f"stage for it first")
    if (run_model_dir / "adapter_config.json").exists():
        return Path(base_dir), run_model_dir
    return run_model_dir, None
