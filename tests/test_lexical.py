"""The model-free targeted baselines, BM25 and DSIR: planted signal, determinism, the rule axis
on BM25, and the bootstrap stability they share with every targeted selector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from baselines.bm25 import BM25Selector
from baselines.dsir import DSIRSelector, log_importance_weights
from naitbench.select.protocol import SelectionContext
from naitbench.select.stability import stability

CODE = ["def {f}(items): return sorted(items)", "write a python function {f} that returns "
        "the list reversed", "implement {f} in python using a for loop over the list",
        "fix the bug in this python function {f}: def {f}(x): return x[0]"]
OTHER = ["describe the taste of {f} soup in a short poem", "give three tips for growing {f} "
         "in the garden", "summarise the history of the {f} festival", "what colour is a ripe "
         "{f} and why"]


def _records(templates: list[str], n: int, prefix: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]
    out = []
    for i in range(n):
        text = templates[i % len(templates)].format(f=names[rng.integers(len(names))])
        out.append({"id": f"{prefix}{i:03d}", "instruction": text, "input": "",
                    "response": "Sure. " + text, "subtask": "code"})
    return out


def _ctx(seed: int = 0) -> tuple[SelectionContext, set[str]]:
    """A pool of 100 in which 12 candidates are about Python code; a code target of 6."""
    code = _records(CODE, 12, "code", 1)
    pool = sorted(code + _records(OTHER, 88, "other", 2), key=lambda r: r["id"][::-1])
    ctx = SelectionContext(cfg=OmegaConf.create({"ratio": 0.1}), pool=pool,
                           targets={"code": _records(CODE, 6, "t", 3)},
                           data_dir=Path("unused"), model_dir=Path("unused"), seed=seed)
    return ctx, {r["id"] for r in code}


def _top(ctx: SelectionContext, scores: np.ndarray, k: int = 10) -> set[str]:
    return {ctx.pool[i]["id"] for i in np.argsort(-scores, kind="stable")[:k]}


@pytest.mark.parametrize("rule", ["max", "mean", "round_robin", "uot", "knn_uniform"])
def test_bm25_keeps_the_planted_code_candidates(rule):
    ctx, code = _ctx()
    params = {"alpha": 0.9} if rule == "knn_uniform" else {}   # K inside the 12 code
    kept = _top(ctx, BM25Selector(rule=rule, rule_params=params).run(ctx))
    assert len(kept & code) >= 9, rule     # a random 10 of 100 holds 1.2 code candidates


def test_bm25_refuses_the_density_rule_by_name():
    ctx, _ = _ctx()
    with pytest.raises(ValueError, match="bm25 defines no candidate-to-candidate similarity"):
        BM25Selector(rule="knn_kde").run(ctx)


def test_dsir_weights_favour_the_target_distribution_and_resample_from_the_seed():
    ctx, code = _ctx()
    top_k = DSIRSelector(sampling="top_k").run(ctx)
    assert len(_top(ctx, top_k) & code) >= 9
    first, again = DSIRSelector().run(ctx), DSIRSelector().run(ctx)
    np.testing.assert_array_equal(first, again)                 # the seed fixes the draw
    other = DSIRSelector().run(_ctx(seed=1)[0])
    assert not np.array_equal(first, other)                     # another seed, another draw
    assert len(_top(ctx, first) & code) >= 6                    # resampling, still targeted
    assert ctx.cost["forward_tokens"] == 0 and ctx.cost["wall_s"] > 0


def test_dsir_log_weight_is_the_bag_of_ngrams_log_ratio():
    weights = log_importance_weights(["a b", "c d"], ["a b a b"], ngrams=1, num_buckets=64)
    # target puts all its mass on {a, b}; the pool 1/4 on each word: log(0.5 / 0.25) per word
    np.testing.assert_allclose(weights[0], 2 * np.log(0.5 / 0.25), rtol=1e-6)
    assert weights[1] < -30                                      # words the target never uses


def test_lexical_selectors_report_stability_under_indomain_resampling():
    ctx, _ = _ctx()
    for selector in (BM25Selector(), DSIRSelector(sampling="top_k")):
        record = stability(selector, ctx, draws=4, ratio=0.1)
        assert 0 < record["mean_jaccard"] <= 1 and record["draws"] == 4
