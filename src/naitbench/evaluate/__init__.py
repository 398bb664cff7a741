"""Scoring models with lm-evaluation-harness on the repo's task pack (`tasks/`).

Public API: `evaluate(cfg, model_dir, out_dir, data_dir=..., adapter_dir=None) -> metrics`,
`evaluate_many(cfg, [Row(model_dir, out_dir, adapter_dir, resume_dir), ...], data_dir=...)`
(several models, setup paid once),
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
    Row,
    available_tasks,
    evaluate,
    evaluate_many,
)

__all__ = ["METRICS_FILE", "RESULTS_FILE", "SAMPLES_FILE", "TASK_DIR", "EvalConfigError", "Row",
           "available_tasks", "evaluate", "evaluate_many", "resolve_model", "resume_dir",
           "scores_dir"]
