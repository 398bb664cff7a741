"""The selector protocol: a selector scores every pool candidate (higher = keep).

Everything else (top-ratio selection, tie-breaking, subset files, manifests, costs) is shared
code in this package, so a new method is one module plus one config file
(docs/adding-a-selector.md).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from naitbench.errors import ConfigError
from naitbench.features import FeatureStore, ensure_features
from naitbench.features.capture import Spec, parse_specs
from naitbench.models.precision import COMPUTE, autocast, compute_record, resolve_autocast


@dataclass
class SelectionContext:
    """What a selector may look at: the pool, the in-domain sets of its targets, the base
    model and the shared feature store; plus a cost ledger it adds its own work to."""

    cfg: DictConfig
    pool: list[dict]
    targets: dict[str, list[dict]]
    data_dir: Path
    model_dir: Path
    seed: int
    cost: dict = field(default_factory=lambda: {"forward_tokens": 0, "backward_tokens": 0,
                                                "wall_s": 0.0, "shared": {}})
    #: per target, the rows of its in-domain set this context sees (None: every row once)
    indomain_rows: dict[str, np.ndarray] | None = None
    #: whether selectors write their reusable artefacts (off for draws and analyses)
    save_artefacts: bool = True
    #: stores and loaded features, shared by the bootstrap draws of this context
    loaded: dict = field(default_factory=dict, repr=False)
    #: precision of a selector's own model passes (`select.precision`: auto | fp32 | bf16)
    precision: str = "auto"
    #: what those passes computed in (compute_record), set by `autocast`; None: no own pass
    compute: dict | None = None

    def resampled(self, draw: int) -> SelectionContext:
        """The same context with every target's in-domain set replaced by a bootstrap draw
        (rows with replacement, as many as the set has), seeded by `draw` and the target's
        name: one draw is one independent selection of a deterministic targeted method."""
        rows = {name: indomain_bootstrap(len(records), draw, name)
                for name, records in self.targets.items()}
        return dataclasses.replace(
            self, targets={name: [self.targets[name][i] for i in idx]
                           for name, idx in rows.items()},
            indomain_rows=rows)

    def records_file(self, name: str) -> Path:
        """'pool' or a target name -> the JSONL file its records come from."""
        if name == "pool":
            return self.data_dir / "pool" / "pool.jsonl"
        return self.data_dir / "targets" / name / "indomain.jsonl"

    def store(self, name: str) -> FeatureStore:
        """The feature store of 'pool' or a target, extracting what is missing (all the
        configured specs in one pass). Its build cost is recorded once, as shared."""
        if ("store", name) in self.loaded:
            return self.loaded["store", name]
        fcfg = self.cfg.features
        store, _ = ensure_features(self.records_file(name), self.model_dir, list(fcfg.specs),
                                   root=fcfg.root, max_length=fcfg.max_length,
                                   batch_size=fcfg.batch_size, shard_size=fcfg.shard_size,
                                   precision=fcfg.get("precision", "auto"),
                                   layers=fcfg.get("layers"))
        self.cost["shared"][str(store.path)] = {**store.cost, COMPUTE: store.compute}
        self.loaded["store", name] = store
        return store

    def features(self, name: str, spec: Spec, layers: Sequence[int] | None = None) -> np.ndarray:
        """[n, layers, dim] features of 'pool' or a target's in-domain set (its resampled
        rows when the context is a bootstrap draw). Loaded once per context."""
        if spec not in parse_specs(self.cfg.features.specs):
            raise ConfigError(f"feature {spec.name} is not in features.specs "
                              f"{list(self.cfg.features.specs)}: add it there, so the one "
                              f"extraction pass records it")
        key = ("features", name, spec, None if layers is None else tuple(layers))
        if key not in self.loaded:
            self.loaded[key] = self.store(name).load(spec, layers)
        features = self.loaded[key]
        if name != "pool" and self.indomain_rows is not None:
            features = features[self.indomain_rows[name]]
        return features

    def add_cost(self, *, forward_tokens: int = 0, backward_tokens: int = 0,
                 wall_s: float = 0.0) -> None:
        """Work a selector did itself (beyond the shared feature extraction)."""
        self.cost["forward_tokens"] += forward_tokens
        self.cost["backward_tokens"] += backward_tokens
        self.cost["wall_s"] += wall_s

    def autocast(self, device: Any) -> torch.autocast:
        """The autocast context of a selector's own model pass on `device` (bf16 where
        `precision` resolves to it); records what it resolved to for the manifest."""
        self.compute = compute_record(resolve_autocast(self.precision, str(device)), device)
        return autocast(self.precision, str(device))

    def artefact_dir(self, name: str) -> Path:
        """Where a selector saves reusable artefacts (e.g. NAIT's feature library)."""
        return self.data_dir / "libraries" / name


def indomain_bootstrap(n: int, draw: int, target: str) -> np.ndarray:
    """Row indices of bootstrap draw `draw` of an `n`-sample in-domain set (with
    replacement); the same (n, draw, target) always gives the same rows."""
    if n < 1:
        raise ValueError(f"target {target!r} has no in-domain samples to resample")
    key = int.from_bytes(target.encode(), "little") % (2**32)
    return np.sort(np.random.default_rng([int(draw), key]).integers(0, n, size=n))


class Selector(abc.ABC):
    """Base class of every selection method; Hydra's `_target_` instantiates it."""

    #: whether the method looks at target in-domain samples
    targeted: bool = False
    #: whether it reads the stored features (only those selections depend on the features
    #: stage, so features extracted on another CPU re-run no other method)
    reads_features: bool = False

    def __init__(self, name: str, stability_draws: int = 0, **_: Any):
        self.name = name
        #: bootstrap draws of the in-domain sets for the stability figure (0: not computed)
        self.stability_draws = int(stability_draws)

    @property
    def arm(self) -> str:
        """The method's name in subset names, manifests and the report."""
        return self.name

    @abc.abstractmethod
    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One float per pool candidate, in pool order; higher means keep."""

    def run(self, ctx: SelectionContext) -> np.ndarray:
        """Score and time the call (wall time goes to the context's cost ledger)."""
        began = time.perf_counter()
        scores = np.asarray(self.score(ctx), dtype=np.float64)
        ctx.add_cost(wall_s=time.perf_counter() - began)
        if scores.shape != (len(ctx.pool),):
            raise ValueError(f"selector {self.name} returned {scores.shape} scores for a pool "
                             f"of {len(ctx.pool)}")
        if not np.isfinite(scores).all():
            raise ValueError(f"selector {self.name} returned non-finite scores")
        return scores
