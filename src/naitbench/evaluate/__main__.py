"""The evaluate stage: `python -m naitbench.evaluate [eval.subset=<name> eval.train_seed=<k>]`
(no subset: the base model)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, validate
from naitbench.evaluate import evaluate, resolve_model, resume_dir, scores_dir
from naitbench.tracking import start_run
from naitbench.train import MODEL_SUBDIR, run_dir


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        validate(cfg)
        subset, seed = cfg.eval.subset, cfg.eval.train_seed
        trained = (None if subset is None
                   else run_dir(cfg.paths.data_dir, subset, seed) / MODEL_SUBDIR)
        model_dir, adapter_dir = resolve_model(cfg.model.dir, trained)
        out = scores_dir(cfg.paths.data_dir, subset, seed)
        group = "base" if subset is None else f"{subset}-s{seed}"
        with start_run(cfg.tracking, stage="evaluate", config=cfg, group=group) as run:
            metrics = evaluate(cfg.eval, model_dir, out, data_dir=cfg.paths.data_dir,
                               adapter_dir=adapter_dir,
                               resume_dir=resume_dir(cfg.paths.data_dir, subset, seed))
            run.log_summary(metrics)
            run.log_artefacts({"metrics": out / "metrics.json", "samples": out / "samples.jsonl"})
        print(f"scored {subset or 'base'}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
              + f" -> {out}")


if __name__ == "__main__":
    main()
