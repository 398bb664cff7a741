"""Feature extraction benchmarks: hook + pooling overhead, layer sweeps on stored features,
and how extraction time and memory grow with the pool."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import torch
from conftest import BATCH, MAX_LENGTH, SPECS, N, feature_batches, make_data_dir

from naitbench.features import FeatureStore, ensure_features, parse_specs
from naitbench.features.capture import capture_batch
from naitbench.io import read_jsonl
from naitbench.models.load import load_model
from naitbench.nait.library import build_library, score_pool
from naitbench.nait.selector import resolve_layers


def test_extraction_throughput_vs_plain_forward(benchmark, bench_model, bench_source):
    """tokens/s of capture_batch (hooks + pooling) over a plain forward of the same body."""
    model = load_model(bench_model, dtype="float32", device="cpu")
    batches = feature_batches(bench_model, read_jsonl(bench_source / "pool" / "pool.jsonl")[:N])
    tokens = sum(int(real.sum()) for _, real, _ in batches)
    specs = parse_specs(SPECS)

    @torch.no_grad()
    def plain():
        for ids, real, _ in batches:
            model.model(input_ids=ids, attention_mask=real, use_cache=False)

    def capture():
        for ids, real, response in batches:
            capture_batch(model, ids, real, response, specs)

    plain_s, capture_s = [], []
    for _ in range(3):   # interleaved, best of 3: both see the same machine load
        for run, times in ((plain, plain_s), (capture, capture_s)):
            began = time.perf_counter()
            run()
            times.append(time.perf_counter() - began)
    benchmark.pedantic(capture, rounds=1, iterations=1)
    ratio = min(plain_s) / min(capture_s)
    benchmark.extra_info.update({
        "tokens": tokens, "plain_tokens_per_s": tokens / min(plain_s),
        "nait_tokens_per_s": tokens / min(capture_s), "throughput_ratio": ratio})
    assert ratio > 0


def test_layer_sweep_vs_extraction(benchmark, bench_model, bench_source, bench_target,
                                   tmp_path):
    """Scoring one more NAIT layer configuration from stored features vs one extraction."""
    data = make_data_dir(bench_source, tmp_path / "data", N, bench_target, N)
    began = time.perf_counter()
    stores = [ensure_features(data / sub, bench_model, SPECS, root=tmp_path / "features",
                              max_length=MAX_LENGTH, batch_size=BATCH)[0]
              for sub in ("pool/pool.jsonl", f"targets/{bench_target}/indomain.jsonl")]
    extraction_s = time.perf_counter() - began
    spec = parse_specs(["mlp.mean"])[0]
    configs = [[0.5, 0.625, 0.75, 0.875], [0.25, 0.5], [0.75]]

    def sweep():
        for layers in configs:
            pool_store, target_store = (FeatureStore(s.path) for s in stores)
            chosen = resolve_layers(layers, pool_store.n_layers(spec))
            pool = pool_store.load(spec, chosen)
            library = build_library(pool, target_store.load(spec, chosen), chosen, k=4,
                                    centre="pool")           # the suite variant's recipe
            score_pool(library, pool, "cosine", "absolute")

    benchmark.pedantic(sweep, rounds=3, iterations=1)
    per_config = benchmark.stats.stats.min / len(configs)
    benchmark.extra_info.update({"extraction_s": extraction_s, "per_config_s": per_config,
                                 "sweep_over_extraction": per_config / extraction_s})
    assert per_config < extraction_s


def test_cost_growth_with_pool_size(benchmark, bench_model, bench_source, bench_target,
                                    tmp_path):
    """Extraction time and peak traced memory (numpy + Python) at 1x, 2x, 4x the pool; a
    shard is N/2 records, so the store never holds more than one shard in memory."""
    load_model(bench_model, device="cpu")   # warm the file cache: the first size is not penalised
    rows = {}

    def grow():
        for factor in (1, 2, 4):
            data = make_data_dir(bench_source, tmp_path / f"x{factor}", factor * N,
                                 bench_target, 1)
            tracemalloc.start()
            began = time.perf_counter()
            _, cost = ensure_features(data / "pool" / "pool.jsonl", bench_model, SPECS,
                                      root=tmp_path / "features", max_length=MAX_LENGTH,
                                      batch_size=BATCH, shard_size=max(1, N // 2))
            elapsed = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows[factor] = {"time_s": elapsed, "tokens": cost["forward_tokens"],
                            "ms_per_token": 1000 * elapsed / cost["forward_tokens"],
                            "peak_mb": peak / 2**20}

    benchmark.pedantic(grow, rounds=1, iterations=1)
    benchmark.extra_info.update({f"x{k}": v for k, v in rows.items()})
    benchmark.extra_info["time_ratio_x2"] = rows[2]["time_s"] / rows[1]["time_s"]
    benchmark.extra_info["time_ratio_x4"] = rows[4]["time_s"] / rows[1]["time_s"]
    benchmark.extra_info["tokens_ratio_x4"] = rows[4]["tokens"] / rows[1]["tokens"]
    benchmark.extra_info["peak_ratio_x4"] = rows[4]["peak_mb"] / rows[1]["peak_mb"]
    assert np.isfinite(benchmark.extra_info["peak_ratio_x4"])
