"""The selectors' own model passes in bf16 against fp32 (`select.precision`), on the same pool
slice in the same run: the speed ratio, and what it does to the selection (Jaccard of the
top 10% and Spearman correlation of the scores, bf16 against fp32).

Perplexity and IFD (response losses), SelectIT (rating prompts; the base model as its one
rater here) and LESS (per-sample gradients: its warmup, one epoch on half the slice here so
one checkpoint's gradients are timed, is trained first, untimed, and shared by both
precisions, which only its gradient passes differ in). bf16 is forced, so on a CPU
without native bf16 the ratio shows the emulation's cost (`auto` keeps fp32 there)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import N, make_data_dir
from hydra.utils import instantiate
from scipy.stats import spearmanr

from naitbench.config import compose
from naitbench.io import read_jsonl
from naitbench.models.precision import cpu_has_native_bf16
from naitbench.select.protocol import SelectionContext
from naitbench.select.stability import jaccard, top_ids

PASSES = ["perplexity", "ifd", "selectit", "less"]
RATIO = 0.1


@pytest.mark.parametrize("name", PASSES)
def test_bf16_selection_pass_against_fp32(benchmark, name, bench_model, bench_source,
                                          bench_target, data_root, tmp_path):
    data = make_data_dir(bench_source, tmp_path / "data", N, bench_target, min(N, 16))
    overrides = ["profile=smoke", f"model.dir={bench_model}", f"paths.data_dir={data}",
                 f"paths.data_root={data_root}", f"selector={name}", f"target={bench_target}",
                 f"data.prepared_targets=[{bench_target}]", "select.name=bench"]
    if name == "selectit":
        overrides.append("selector.models=[null]")
    if name == "less":   # enough warmup records for several steps (a mean lr above 0)
        overrides += ["selector.warmup_epochs=1", "selector.warmup_ratio=0.5"]
    cfg = compose(overrides)
    selector = instantiate(cfg.selector)
    pool = read_jsonl(data / "pool" / "pool.jsonl")
    targets = ({bench_target: read_jsonl(data / "targets" / bench_target / "indomain.jsonl")}
               if selector.targeted else {})

    def context(precision: str) -> SelectionContext:
        return SelectionContext(cfg=cfg, pool=pool, targets=targets, data_dir=data,
                                model_dir=bench_model, seed=0, precision=precision)

    if name == "less":   # the warmup training, shared by both precisions' gradient passes
        warm = context("fp32")
        selector._warmup(warm, warm.artefact_dir(selector.name))
    runs = {}

    def timed(precision: str) -> None:
        ctx = context(precision)
        began = time.perf_counter()
        runs[precision] = (selector.run(ctx), time.perf_counter() - began, ctx.compute)

    timed("fp32")
    benchmark.pedantic(timed, args=("bf16",), rounds=1, iterations=1)
    (fp32, fp32_s, fp32_ran), (bf16, bf16_s, bf16_ran) = runs["fp32"], runs["bf16"]
    ids = [r["id"] for r in pool]
    benchmark.extra_info.update({
        "n_pool": len(pool), "native_bf16": cpu_has_native_bf16(),
        "fp32_s": fp32_s, "bf16_s": bf16_s, "bf16_speedup": fp32_s / bf16_s,
        "top10_jaccard": jaccard(top_ids(ids, fp32, RATIO), top_ids(ids, bf16, RATIO)),
        "spearman": float(spearmanr(fp32, bf16).statistic),
        "max_abs_score_difference": float(np.max(np.abs(fp32 - bf16)))})
    assert fp32_ran["precision"] == "fp32" and bf16_ran["precision"] == "bf16"
    assert np.ptp(fp32) > 0, "every candidate scored the same: the comparison says nothing"
