"""The NAIT selector on the shared protocol: libraries per target, z-score mean across targets.

One class serves both recipes (docs/nait.md): `conf/selector/nait.yaml` is the published
Algorithm 1 (hidden-state drift over the whole sample, first principal component, dot
product summed over every layer), `conf/selector/nait_variant.yaml` the suite's own earlier
recipe; every choice between them is an option, so the ablation is a list of overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from naitbench.config import check_layers
from naitbench.features.capture import Spec
from naitbench.nait.library import CENTRES, RESTS, SCORINGS, build_library, score_pool
from naitbench.select.aggregate import zscore_mean
from naitbench.select.protocol import SelectionContext, Selector

FEATURES = ("drift", "mean", "last")
SPANS = ("sample", "response")


def resolve_layers(layers: Sequence[int | float] | None, n_layers: int) -> list[int]:
    """None is every layer; integers are layer indices; floats in [0, 1) fractions of the
    depth."""
    if layers is None:
        return list(range(n_layers))
    resolved = []
    for layer in layers:
        if isinstance(layer, float) and 0 <= layer < 1:
            layer = int(layer * n_layers)
        resolved.append(layer)
    return sorted(set(check_layers(resolved, n_layers)))


def feature_specs(site: str, feature: str, span: str) -> tuple[Spec, ...]:
    """The stored poolings a feature is made of: (last, first) for a drift, one for the rest."""
    if feature == "drift":
        return Spec(site, "last"), Spec(site, "first" if span == "sample" else "response_first")
    if feature == "mean":
        return (Spec(site, "sample_mean" if span == "sample" else "mean"),)
    return (Spec(site, "last"),)   # the sample's last token is its last response token


def activation_features(load: Callable[[Spec], np.ndarray], specs: Sequence[Spec]) -> np.ndarray:
    """[n, layers, d] features: the drift A(t_K) - A(t_1) from two poolings, else the one."""
    if len(specs) == 2:
        return load(specs[0]) - load(specs[1])
    return load(specs[0])


class NAITSelector(Selector):
    """Rank candidates by alignment with the target's activation features."""

    targeted = True

    def __init__(self, name: str = "nait", site: str = "residual", feature: str = "drift",
                 span: str = "sample", layers: Sequence[int | float] | None = None, k: int = 1,
                 centre: str = "self", scoring: str = "dot", rest: str = "signed", **kwargs):
        super().__init__(name, **kwargs)
        for key, value, allowed in (("site", site, ("residual", "mlp")),
                                    ("feature", feature, FEATURES), ("span", span, SPANS),
                                    ("centre", centre, CENTRES),
                                    ("scoring", scoring, SCORINGS), ("rest", rest, RESTS)):
            if value not in allowed:
                raise ValueError(f"selector.{key}={value!r}: use one of {list(allowed)}")
        self.specs = feature_specs(site, feature, span)
        self.layers = None if layers is None else list(layers)
        self.k, self.centre, self.scoring, self.rest = int(k), centre, scoring, rest

    def score(self, ctx: SelectionContext) -> np.ndarray:
        n_layers = ctx.store("pool").n_layers(self.specs[0])
        layers = resolve_layers(self.layers, n_layers)
        pool = activation_features(lambda s: ctx.features("pool", s, layers), self.specs)
        per_target = []
        for target in ctx.targets:
            features = activation_features(lambda s, t=target: ctx.features(t, s, layers),
                                           self.specs)
            library = build_library(pool, features, layers, self.k, self.centre)
            if ctx.save_artefacts:
                library.save(ctx.artefact_dir(ctx.cfg.select.name) / f"{target}.npz")
            per_target.append(score_pool(library, pool, self.scoring, self.rest))
        return zscore_mean(per_target) if len(per_target) > 1 else per_target[0]
