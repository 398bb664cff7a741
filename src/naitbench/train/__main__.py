"""The train stage: `python -m naitbench.train train.subset=<name> train.seed=<k>`.

Several GPUs: `accelerate launch --multi_gpu --num_processes N -m naitbench.train ...`
(several CPU processes: the same with ACCELERATE_USE_CPU=1). Resuming needs the same number
of processes as the interrupted run.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, validate
from naitbench.tracking import start_run
from naitbench.train import checkpoint_dir, load_examples, run_dir, train


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        validate(cfg)
        subset, seed = cfg.train.subset, cfg.train.seed
        examples = load_examples(cfg.paths.data_dir, subset)
        out = run_dir(cfg.paths.data_dir, subset, seed)
        with start_run(cfg.tracking, stage="train", config=cfg, group=f"{subset}-s{seed}") as run:
            metrics = train(cfg.train, cfg.model.dir, examples, out, seed=seed,
                            checkpoint_dir=checkpoint_dir(cfg.paths.data_dir, subset, seed))
            for entry in metrics["loss_curve"]:
                run.log_metrics({"loss": entry["loss"], "lr": entry["lr"]}, step=entry["step"])
            run.log_summary({k: metrics[k] for k in ("steps", "tokens", "final_loss",
                                                     "tokens_per_s")})
            run.log_costs(wall_time_s=metrics["wall_time_s"], forward_tokens=metrics["tokens"],
                          backward_tokens=metrics["tokens"])
            run.log_artefacts({"model": out / "model"})
        print(f"trained {subset} (seed {seed}): {metrics['steps']} steps, {metrics['tokens']} "
              f"tokens, {metrics['tokens_per_s']:.0f} tokens/s, final loss "
              f"{metrics['final_loss']:.4f} -> {out}")


if __name__ == "__main__":
    main()
