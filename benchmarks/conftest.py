"""Benchmark inputs: a model and a pool slice. CI size by default (the tests' tiny model and
smoke pool); NAITBENCH_BENCH_MODEL / NAITBENCH_BENCH_DATA point at a real model directory and
a prepared data directory, NAITBENCH_BENCH_N sets the 1x pool slice (records)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from naitbench.io import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("naitbench_test_fixtures",
                                               REPO / "tests" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
data_root, tiny_model_dir = _fixtures.data_root, _fixtures.tiny_model_dir
smoke_cfg, prepared_smoke = _fixtures.smoke_cfg, _fixtures.prepared_smoke

N = int(os.environ.get("NAITBENCH_BENCH_N", "12"))
SPECS = ["residual.first", "residual.last", "residual.sample_mean", "residual.response_first",
         "residual.mean", "mlp.first", "mlp.last", "mlp.mean",
         "final.weighted"]   # the features stage's default specs (conf/config.yaml)
MAX_LENGTH, BATCH = 512, 8               # the features stage's defaults


@pytest.fixture(scope="session")
def bench_model(request) -> Path:
    """NAITBENCH_BENCH_MODEL, else the tiny random Llama."""
    given = os.environ.get("NAITBENCH_BENCH_MODEL")
    return Path(given) if given else request.getfixturevalue("tiny_model_dir")


@pytest.fixture(scope="session")
def bench_source(request) -> Path:
    """A prepared data directory: NAITBENCH_BENCH_DATA, else the smoke profile's."""
    given = os.environ.get("NAITBENCH_BENCH_DATA")
    return Path(given) if given else request.getfixturevalue("prepared_smoke")


@pytest.fixture(scope="session")
def bench_target(bench_source) -> str:
    """The first prepared target (alphabetically)."""
    return sorted(p.name for p in (bench_source / "targets").iterdir())[0]


def make_data_dir(source: Path, out: Path, n_pool: int, target: str, n_target: int) -> Path:
    """A data directory holding the first `n_pool` pool records and `n_target` in-domain
    records of `target` (benchmarks scale the pool without re-running prepare_data)."""
    pool = read_jsonl(source / "pool" / "pool.jsonl")
    if len(pool) < n_pool:
        raise ValueError(f"{source} holds {len(pool)} pool records, {n_pool} are needed")
    write_jsonl(out / "pool" / "pool.jsonl", pool[:n_pool])
    indomain = read_jsonl(source / "targets" / target / "indomain.jsonl")[:n_target]
    write_jsonl(out / "targets" / target / "indomain.jsonl", indomain)
    return out


def feature_batches(model_dir: Path, records: list[dict], device: str = "cpu",
                    batch_size: int = BATCH) -> list[tuple]:
    """The features stage's padded batches (ids, attention mask, response mask) of `records`."""
    from naitbench.features.capture import collate, length_batches
    from naitbench.features.store import encode_sample
    from naitbench.models.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    encoded = [encode_sample(tokenizer, r, MAX_LENGTH) for r in records]
    return [collate([encoded[i] for i in b], tokenizer.pad_token_id, device)
            for b in length_batches([len(e["input_ids"]) for e in encoded], batch_size)]


def device_or_skip(device: str) -> str:
    """`device`, or a skip when it is a GPU and none is present."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return device
