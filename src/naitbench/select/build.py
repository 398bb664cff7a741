"""A selector and its context from the composed config: what the selection CLI and the
analyses share."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from naitbench.errors import ConfigError
from naitbench.io import read_jsonl
from naitbench.select.protocol import SelectionContext, Selector


def selection_targets(cfg: DictConfig) -> list[str]:
    """The targets a targeted selector aims at: `select.targets` or the chosen `target`."""
    chosen = cfg.select.get("targets") or [cfg.target.name]
    for name in chosen:
        if name not in cfg.data.prepared_targets:
            raise ConfigError(f"select.targets: '{name}' is not prepared by this profile "
                              f"(prepared: {list(cfg.data.prepared_targets)})")
    return list(chosen)


def make_selector(config: DictConfig) -> Selector:
    """Instantiate a selector config (its `_target_`), checking it is a Selector."""
    selector = instantiate(config)
    if not isinstance(selector, Selector):
        raise ConfigError(f"selector._target_={config._target_} is not a Selector")
    return selector


def make_context(cfg: DictConfig, targeted: bool) -> SelectionContext:
    """The pool, the in-domain sets of the selection targets (targeted selectors only), the
    base model and the feature store's configuration."""
    data_dir = Path(cfg.paths.data_dir)
    pool_file = data_dir / "pool" / "pool.jsonl"
    if not pool_file.exists():
        raise FileNotFoundError(f"{pool_file} does not exist: run prepare_data first")
    targets = selection_targets(cfg) if targeted else []
    return SelectionContext(
        cfg=cfg, pool=read_jsonl(pool_file),
        targets={t: read_jsonl(data_dir / "targets" / t / "indomain.jsonl") for t in targets},
        data_dir=data_dir, model_dir=Path(cfg.model.dir), seed=int(cfg.seed),
        precision=str(cfg.select.get("precision", "auto")))
