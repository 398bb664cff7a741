"""`python -m naitbench.select selector=nait target=code ratio=0.1`: one subset.

Hydra app on conf/; `-m` sweeps (layers, ratios) reuse the stored features.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, check_ratio, rule_arms, validate
from naitbench.errors import ConfigError
from naitbench.io import content_hash, file_hash
from naitbench.models.precision import COMPUTE
from naitbench.select.build import make_context, make_selector
from naitbench.select.stability import stability
from naitbench.select.subset import subset_name, top_ratio, write_subset
from naitbench.tracking import start_run


def default_name(cfg: DictConfig, method: str, ratio: float, targets: list[str]) -> str:
    """`<method>[-<targets>]-r<ratio>-s<seed>` (`method`: the selector's arm, e.g. rds+uot),
    plus a short hash of the selector config when it differs from the catalogue's (so a sweep
    over e.g. layers writes distinct subsets)."""
    name = subset_name(method, ratio, int(cfg.seed), targets)
    chosen = cfg.selectors[cfg.select.method] if cfg.select.get("method") else cfg.selector
    catalogue = cfg.get("selectors", {})
    reference = catalogue.get(cfg.select.get("method") or method)
    representation, _, rule = method.partition("+")
    if reference is None and rule and representation in catalogue:   # a rule arm
        reference = OmegaConf.merge(catalogue[representation], {"rule": rule})
    if reference is not None and OmegaConf.to_container(reference) != OmegaConf.to_container(
            chosen):
        name += "-" + content_hash(json.dumps(OmegaConf.to_container(chosen, resolve=True),
                                              sort_keys=True), length=6)
    return name


def checked(cfg: DictConfig) -> tuple[float, str | None, Any]:
    """The ratio, the catalogue method (or None: `selector`) and the selector, every config
    value checked: run before anything is started, so a mistake costs nothing."""
    validate(rule_arms(cfg))
    ratio = check_ratio(cfg.ratio)
    method = cfg.select.get("method")
    if method is not None and method not in cfg.selectors:
        raise ConfigError(f"select.method={method!r} is not in the selectors catalogue "
                          f"{sorted(cfg.selectors)}")
    return ratio, method, make_selector(cfg.selectors[method] if method else cfg.selector)


def select(cfg: DictConfig) -> Path:
    """Score the pool with the configured selector and write the subset files (and, for a
    selector with `stability_draws`, its stability under in-domain resampling)."""
    ratio, method, selector = checked(cfg)
    ctx = make_context(cfg, selector.targeted)
    pool_file = ctx.records_file("pool")
    targets = list(ctx.targets)
    every_sample = ctx
    resample = bool(cfg.select.get("indomain_resample", False))
    if resample:
        if not selector.targeted:
            raise ConfigError(f"select.indomain_resample=true: {selector.name} is untargeted, "
                              f"it has no in-domain samples to resample")
        ctx = ctx.resampled(int(cfg.seed))   # the selection seed picks the bootstrap draw
    name = cfg.select.get("name") or default_name(cfg, selector.arm, ratio, targets)
    ctx.cfg = OmegaConf.merge(cfg, {"select": {"name": name}})
    ctx.artefact_dir(name).mkdir(parents=True, exist_ok=True)
    scores = selector.run(ctx)
    ids = [r["id"] for r in ctx.pool]
    kept = top_ratio(ids, scores, ratio)
    manifest = {"method": selector.arm, "targets": targets, "ratio": ratio,
                "seed": int(cfg.seed), "indomain_draw": int(cfg.seed) if resample else None,
                "pool_file": str(pool_file),
                "pool_hash": file_hash(pool_file), "n_pool": len(ids), "cost": ctx.cost,
                "selector": OmegaConf.to_container(cfg.selectors[method] if method
                                                   else cfg.selector, resolve=True),
                "model": str(cfg.model.dir), COMPUTE: ctx.compute}
    if selector.targeted and selector.stability_draws > 0:
        # stability resamples the whole in-domain set, not the draw this subset came from
        record = stability(selector, replace(every_sample, cfg=ctx.cfg, cost=ctx.cost),
                           selector.stability_draws, ratio)
        manifest["cost"]["stability_wall_s"] = record.pop("wall_s")   # not the method's cost
        manifest["stability"] = record
    return write_subset(ctx.data_dir / "subsets", name, ids, scores, kept, manifest)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        checked(cfg)   # before the tracking run: a config mistake prints its message alone
        with start_run(cfg.tracking, stage="select", config=cfg,
                       group=cfg.select.get("name") or "select") as run:
            path = select(cfg)
            manifest = json.loads(path.with_suffix(".manifest.json").read_text())
            cost = manifest["cost"]
            run.log_costs(wall_time_s=cost["wall_s"], forward_tokens=cost["forward_tokens"],
                          backward_tokens=cost["backward_tokens"])
            run.log_artefacts({"subset": path, "pool": manifest["pool_file"]})
        print(f"subset written: {path}")


if __name__ == "__main__":
    main()
