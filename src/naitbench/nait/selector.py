"""The NAIT selector on the shared protocol: libraries per target, z-score mean across targets.

One class serves both recipes (docs/nait.md): `conf/selector/nait.yaml` is the published
Algorithm 1 (hidden-state drift over the whole sample, first principal component, dot
product summed over every layer), `conf/selector/nait_variant.yaml` the suite's own earlier
recipe; every choice between them is an option, so the ablation is a list of overrides.

With `rule:` set, NAIT is a representation on the rule axis (naitbench.select.targeted): a
sample is represented by its weighted projections on the target's library directions (the
terms NAIT's score sums, `project`), and a candidate's similarity to a target sample is the
dot product of their projections over the largest candidate norm times the sample's norm, a
value in [-1, 1] that keeps NAIT's magnitudes (docs/nait.md says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from naitbench.config import check_layers
from naitbench.errors import ConfigError
from naitbench.features.capture import Spec
from naitbench.nait.library import (
    CENTRES,
    RESTS,
    SCORINGS,
    FeatureLibrary,
    build_library,
    project,
    score_pool,
)
from naitbench.select.aggregate import zscore_mean
from naitbench.select.protocol import SelectionContext
from naitbench.select.targeted import SimilaritySelector

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


class NAITSelector(SimilaritySelector):
    """Rank candidates by alignment with the target's activation features."""

    #: no rule: NAIT's own score (the published recipe); a rule puts NAIT on the rule axis
    default_rule = None
    reads_features = True

    def __init__(self, name: str = "nait", site: str = "residual", feature: str = "drift",
                 span: str = "sample", layers: Sequence[int | float] | None = None, k: int = 1,
                 centre: str = "self", scoring: str = "dot", rest: str = "signed",
                 library: str | None = None, **kwargs):
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
        self.library = library

    def _features(self, ctx: SelectionContext, name: str) -> np.ndarray:
        """[n, layers, d] activation features of 'pool' (made once per context: the pool's
        can be gigabytes) or of a target (its draw's rows)."""
        layers = resolve_layers(self.layers, ctx.store("pool").n_layers(self.specs[0]))
        key = ("activation features", self.specs, tuple(layers))
        if name == "pool" and key in ctx.loaded:
            return ctx.loaded[key]
        features = activation_features(lambda s: ctx.features(name, s, layers), self.specs)
        if name == "pool":
            ctx.loaded[key] = features
        return features

    def _library(self, ctx: SelectionContext, target: str) -> FeatureLibrary:
        if self.library is not None:
            return self._saved_library(ctx, target)
        layers = resolve_layers(self.layers, ctx.store("pool").n_layers(self.specs[0]))
        return build_library(self._features(ctx, "pool"), self._features(ctx, target), layers,
                             self.k, self.centre)

    def _saved_library(self, ctx: SelectionContext, target: str) -> FeatureLibrary:
        """A target's library saved by an earlier selection (`library`: its .npz, or the
        folder holding <target>.npz), to score this pool with features captured elsewhere."""
        path = Path(self.library)
        if path.is_dir():
            path = path / f"{target}.npz"
        if not path.is_file():
            raise ConfigError(f"selectors.{self.name}.library: {path} does not exist (a "
                              f"library is data/libraries/<subset>/<target>.npz of a NAIT run)")
        library = FeatureLibrary.load(path)
        pool_layers = ctx.store("pool").n_layers(self.specs[0])
        if max(library.layers) >= pool_layers or \
                library.directions.shape[-1] != self._features(ctx, "pool").shape[-1]:
            raise ConfigError(
                f"selectors.{self.name}.library: {path} has layers {library.layers} of width "
                f"{library.directions.shape[-1]}, which this model's features do not: a "
                f"library scores pools only through the model that built it")
        if resolve_layers(self.layers, pool_layers) != library.layers:
            raise ConfigError(f"selectors.{self.name}.library: {path} was built on layers "
                              f"{library.layers}: set selectors.{self.name}.layers to them")
        return library

    def score(self, ctx: SelectionContext) -> np.ndarray:
        libraries = {target: self._library(ctx, target) for target in ctx.targets}
        if ctx.save_artefacts:
            for target, library in libraries.items():
                library.save(ctx.artefact_dir(ctx.cfg.select.name) / f"{target}.npz")
        if self.rule is not None:
            return super().score(ctx)
        pool = self._features(ctx, "pool")
        per_target = [score_pool(library, pool, self.scoring, self.rest)
                      for library in libraries.values()]
        return zscore_mean(per_target) if len(per_target) > 1 else per_target[0]

    def _projected_pool(self, ctx: SelectionContext, library: FeatureLibrary) -> np.ndarray:
        """Pool projections over the largest candidate norm (every row's norm <= 1)."""
        pool = project(library, self._features(ctx, "pool"))
        return pool / max(float(np.linalg.norm(pool, axis=1).max()), 1e-12)

    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        library = self._library(ctx, target)
        samples = project(library, self._features(ctx, target), target=True)
        samples /= np.maximum(np.linalg.norm(samples, axis=1, keepdims=True), 1e-12)
        return self._projected_pool(ctx, library) @ samples.T

    def vectors(self, ctx: SelectionContext) -> np.ndarray:
        blocks = [self._projected_pool(ctx, self._library(ctx, t)) for t in ctx.targets]
        return np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))
