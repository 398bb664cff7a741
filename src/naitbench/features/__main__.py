"""The features stage: one extraction pass over the pool and every prepared target's
in-domain set, recording every configured spec (all layers) for later selectors.

Several GPUs: `accelerate launch --multi_gpu --num_processes N -m naitbench.features ...`
(several CPU processes: the same with ACCELERATE_USE_CPU=1); each process extracts its own
range of shards and rank 0 merges the index (see naitbench.features.store)."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, validate
from naitbench.features.capture import parse_specs
from naitbench.features.store import ensure_features
from naitbench.io import write_json
from naitbench.models.precision import COMPUTE
from naitbench.tracking import start_run


def extract_all(cfg: DictConfig) -> dict:
    """Extract (or find) the features of the pool and each target; return a cost summary."""
    validate(cfg)
    data_dir, fcfg = Path(cfg.paths.data_dir), cfg.features
    files = {"pool": data_dir / "pool" / "pool.jsonl"}
    files.update({t: data_dir / "targets" / t / "indomain.jsonl"
                  for t in cfg.data.prepared_targets})
    device, main_process, processes = None, True, 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # launched by accelerate / torchrun
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator
        device, main_process = str(state.device), state.is_main_process
        processes = state.num_processes
    summary, timing = {}, {}
    for name, path in files.items():
        store, cost = ensure_features(path, cfg.model.dir, list(fcfg.specs), root=fcfg.root,
                                      max_length=fcfg.max_length, batch_size=fcfg.batch_size,
                                      shard_size=fcfg.shard_size, device=device,
                                      precision=fcfg.get("precision", "auto"),
                                      layers=fcfg.get("layers"))
        build = {k: v for k, v in store.cost.items() if k != "wall_s"}
        summary[name] = {"store": str(store.path), "build_cost": build,
                         "num_processes": processes, COMPUTE: store.compute}
        timing[name] = {"build_wall_s": store.cost["wall_s"], "this_call": cost}
    if main_process:   # what ran, apart from when and for how long (naitbench.features.store)
        write_json(Path(fcfg.root) / "summary.json", summary)
        write_json(Path(fcfg.root) / "summary.timing.json", timing)
    return {name: {**summary[name], **timing[name]} for name in summary}


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        validate(cfg)   # before the tracking run: a config mistake prints its message alone
        parse_specs(list(cfg.features.specs))
        with start_run(cfg.tracking, stage="features", config=cfg, group="features") as run:
            summary = extract_all(cfg)
            run.log_costs(wall_time_s=sum(i["this_call"]["wall_s"] for i in summary.values()),
                          forward_tokens=sum(i["this_call"]["forward_tokens"]
                                             for i in summary.values()))
            run.log_artefacts({name: Path(info["store"]) / "index.json"
                               for name, info in summary.items()})
        for name, info in summary.items():
            print(f"{name}: {info['store']} ({info['build_cost']['forward_tokens']} tokens)")


if __name__ == "__main__":
    main()
