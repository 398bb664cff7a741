"""Fine-tuning a base model on a subset of the pool (LoRA by default, or full fine-tuning).

Public API: `train(cfg, model_dir, examples, out_dir, seed=...) -> metrics` and
`load_examples(data_dir, subset)`; `python -m naitbench.train` is the DVC stage.
"""

from naitbench.train.data import load_examples
from naitbench.train.loop import (
    METRICS_FILE,
    MODEL_SUBDIR,
    ResumeMismatch,
    TrainingDiverged,
    train,
)
from naitbench.train.paths import checkpoint_dir, run_dir

__all__ = ["METRICS_FILE", "MODEL_SUBDIR", "ResumeMismatch", "TrainingDiverged",
           "checkpoint_dir", "load_examples", "run_dir", "train"]
