"""Targeted selection as two choices: a representation and a rule.

A `SimilaritySelector` is the representation: the similarity of every candidate to every
target in-domain sample (and, for rules that need it, candidate vectors whose dot products
are candidate-to-candidate similarities). The rule (naitbench.select.rules, `rule:` in the
selector's config, default the representation's own paper's) turns the matrix into a
ranking. Several targets form one target set: their matrices are joined column-wise and
each column is labelled `<target>/<subtask>` for the rules that group target samples.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from naitbench.select.protocol import SelectionContext, Selector
from naitbench.select.rules import apply_rule, check_rule


class SimilaritySelector(Selector):
    """A targeted selector whose scores are a rule applied to candidate-to-sample
    similarities."""

    targeted = True
    #: the rule used when the config names none (the representation's paper's); None: the
    #: selector's own score, which it computes by overriding `score`
    default_rule: str | None = "max"

    def __init__(self, name: str, rule: str | None = None,
                 rule_params: dict[str, Any] | None = None, **kwargs):
        super().__init__(name, **kwargs)
        self.rule = rule or self.default_rule
        self.rule_params = dict(rule_params or {})
        if self.rule is not None:
            check_rule(self.rule, self.rule_params)
        elif self.rule_params:
            raise ValueError(f"{name}: rule_params {sorted(self.rule_params)} given without "
                             f"a rule")

    @property
    def arm(self) -> str:
        """`<name>+<rule>` when the rule is not the representation's own, else the name."""
        return self.name if self.rule == self.default_rule else f"{self.name}+{self.rule}"

    @abc.abstractmethod
    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        """[n_pool, n_samples]: each candidate's similarity to each in-domain sample of
        `target` as the context sees it (`ctx.targets[target]`: a bootstrap draw in a
        stability run)."""

    def vectors(self, ctx: SelectionContext) -> np.ndarray:
        """[n_pool, d] candidate vectors whose dot products are the representation's
        candidate-to-candidate similarities (the `knn_kde` rule's density)."""
        raise ValueError(f"rule {self.rule}: {self.name} defines no candidate-to-candidate "
                         f"similarity")

    def target_similarity(self, ctx: SelectionContext) -> tuple[np.ndarray, list[str]]:
        """The joined matrix of every target and each column's `<target>/<subtask>` label."""
        if not ctx.targets:
            raise ValueError(f"{self.name} is targeted: the context has no target in-domain "
                             f"set")
        blocks, groups = [], []
        for target, records in ctx.targets.items():
            matrix = np.asarray(self.similarity(ctx, target), dtype=np.float64)
            if matrix.shape != (len(ctx.pool), len(records)):
                raise ValueError(f"{self.name}: similarity to target {target!r} has shape "
                                 f"{matrix.shape}, expected {(len(ctx.pool), len(records))}")
            blocks.append(matrix)
            groups += [f"{target}/{r.get('subtask') or target}" for r in records]
        return np.concatenate(blocks, axis=1), groups

    def score(self, ctx: SelectionContext) -> np.ndarray:
        matrix, groups = self.target_similarity(ctx)
        return apply_rule(matrix, self.rule, groups=groups, params=self.rule_params,
                          vectors=lambda: self.vectors(ctx))
