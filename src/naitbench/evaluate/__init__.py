"""Scoring models with lm-evaluation-harness on the repo's task pack (`tasks/`).

Public API: `evaluate(cfg, model_dir, out_dir, data_dir=..., adapter_dir=None) -> metrics`,
`resolve_model(base_dir, run_model_dir)`, `scores_dir(data_dir, subset, seed)`,
`resume_dir(data_dir, subset, seed)`;
`python -m naitbench.evaluate` is the DVC stage.
"""

from naitbench.evaluate.paths import resolve_model, resume_dir, scores_dir
from naitbench.evaluate.runner import (
    METRICS_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    TASK_DIR,
    EvalConfigError,
    available_tasks,
    evaluate,
)

__all__ = ["METRICS_FILE", "RESULTS_FILE", "SAMPLES_FILE", "TASK_DIR", "EvalConfigError",
           "available_tasks", "evaluate", "resolve_model", "resume_dir", "scores_dir"]
