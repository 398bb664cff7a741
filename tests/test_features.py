"""Activation capture and the feature store, on the tiny model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO

from naitbench.features import FORWARD_PASSES, FeatureStore, Spec, ensure_features
from naitbench.features.capture import capture_batch, collate, parse_specs
from naitbench.features.store import encode_sample
from naitbench.io import read_jsonl
from naitbench.models.load import load_model, load_tokenizer

SPECS = ["mlp.mean", "residual.last", "final.weighted"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32"), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(model_and_tokenizer, prepared_smoke):
    _, tokenizer = model_and_tokenizer
    records = read_jsonl(prepared_smoke / "pool" / "pool.jsonl")[:4]
    encoded = [encode_sample(tokenizer, r, 128) for r in records]
    return encoded, collate(encoded, tokenizer.pad_token_id, "cpu")


def test_hooks_record_the_right_tensors(model_and_tokenizer, batch):
    model, _ = model_and_tokenizer
    encoded, (ids, real, response) = batch
    got = capture_batch(model, ids, real, response, parse_specs(SPECS))
    mlp_inputs = {}
    handles = [layer.mlp.register_forward_hook(
        lambda m, args, _o, i=i: mlp_inputs.__setitem__(i, m.act_fn(m.gate_proj(args[0]))
                                                        * m.up_proj(args[0])))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=real, output_hidden_states=True).hidden_states
    for handle in handles:
        handle.remove()
    for row, sample in enumerate(encoded):
        n = len(sample["input_ids"])
        resp = [t for t in range(n) if sample["labels"][t] != -100]
        for layer in range(4):
            expected = mlp_inputs[layer][row, resp].mean(0)
            assert torch.allclose(got["mlp.mean"][row, layer], expected, atol=1e-5)
        for layer in range(3):   # hidden_states[i + 1] is block i's output (the last is normed)
            expected = hidden[layer + 1][row, resp[-1]]
            assert torch.allclose(got["residual.last"][row, layer], expected, atol=1e-5)
        weights = torch.arange(1, n + 1, dtype=torch.float32)
        expected = (weights[:, None] * hidden[-1][row, :n]).sum(0) / weights.sum()
        assert torch.allclose(got["final.weighted"][row, 0], expected, atol=1e-5)
    assert got["mlp.mean"].shape == (4, 4, 128) and got["final.weighted"].shape == (4, 1, 64)


def test_drift_poolings_record_the_first_and_last_positions(model_and_tokenizer, batch):
    model, _ = model_and_tokenizer
    encoded, (ids, real, response) = batch
    names = ["residual.first", "residual.last", "residual.response_first",
             "residual.sample_mean", "mlp.first"]
    got = capture_batch(model, ids, real, response, parse_specs(names))
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=real, output_hidden_states=True).hidden_states
    for row, sample in enumerate(encoded):
        n = len(sample["input_ids"])
        resp = [t for t in range(n) if sample["labels"][t] != -100]
        assert resp[-1] == n - 1              # the sample's last token is a response token
        for layer in range(3):
            block = hidden[layer + 1][row]
            for name, expected in (("residual.first", block[0]),
                                   ("residual.last", block[n - 1]),
                                   ("residual.response_first", block[resp[0]]),
                                   ("residual.sample_mean", block[:n].mean(0))):
                assert torch.allclose(got[name][row, layer], expected, atol=1e-5), name
    assert got["mlp.first"].shape == (4, 4, 128)


def test_interrupted_extraction_resumes_to_identical_features(tmp_path, prepared_smoke,
                                                              tiny_model_dir):
    pool = prepared_smoke / "pool" / "pool.jsonl"
    kwargs = {"batch_size": 8, "shard_size": 16}
    whole, _ = ensure_features(pool, tiny_model_dir, SPECS, root=tmp_path / "whole", **kwargs)
    with pytest.raises(RuntimeError, match="interrupted after 2 shards"):
        ensure_features(pool, tiny_model_dir, SPECS, root=tmp_path / "cut", fail_after_shards=2,
                        **kwargs)
    before = FORWARD_PASSES["tokens"]
    resumed, cost = ensure_features(pool, tiny_model_dir, SPECS, root=tmp_path / "cut", **kwargs)
    assert cost["forward_tokens"] == FORWARD_PASSES["tokens"] - before > 0
    assert cost["forward_tokens"] < whole.cost["forward_tokens"]      # only the missing shards
    for spec in SPECS:
        np.testing.assert_array_equal(resumed.load(spec), whole.load(spec))


def test_a_corrupted_shard_is_detected_and_recomputed(tmp_path, prepared_smoke, tiny_model_dir):
    pool = prepared_smoke / "pool" / "pool.jsonl"
    store, _ = ensure_features(pool, tiny_model_dir, ["mlp.mean"], root=tmp_path, shard_size=16)
    reference = store.load("mlp.mean")
    shard = store.path / store.index["shards"][1]["files"]["mlp.mean"]["file"]
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x00" * 8
    shard.write_bytes(bytes(data))
    again, cost = ensure_features(pool, tiny_model_dir, ["mlp.mean"], root=tmp_path, shard_size=16)
    assert 0 < cost["forward_tokens"] < store.cost["forward_tokens"]
    np.testing.assert_array_equal(again.load("mlp.mean"), reference)


def test_new_specs_are_added_without_recomputing_stored_ones(tmp_path, prepared_smoke,
                                                            tiny_model_dir):
    pool = prepared_smoke / "pool" / "pool.jsonl"
    first, _ = ensure_features(pool, tiny_model_dir, ["mlp.mean"], root=tmp_path)
    files = {s["files"]["mlp.mean"]["file"] for s in first.index["shards"]}
    stamps = {f: (first.path / f).stat().st_mtime_ns for f in files}
    second, cost = ensure_features(pool, tiny_model_dir, ["mlp.mean", "residual.mean"],
                                   root=tmp_path)
    assert cost["forward_tokens"] > 0 and second.path == first.path
    assert {f: (first.path / f).stat().st_mtime_ns for f in files} == stamps
    assert second.load("residual.mean").shape == (50, 4, 64)


def test_store_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        FeatureStore(tmp_path)
    with pytest.raises(ValueError, match="unknown activation site"):
        Spec("attention", "mean")
    with pytest.raises(ValueError, match="unknown pooling"):
        Spec("mlp", "max")


def test_store_index_records_checksums(tmp_path, prepared_smoke, tiny_model_dir):
    store, _ = ensure_features(prepared_smoke / "targets" / "code" / "indomain.jsonl",
                               tiny_model_dir, ["mlp.mean"], root=tmp_path)
    index = json.loads((store.path / "index.json").read_text())
    entry = index["shards"][0]["files"]["mlp.mean"]
    assert len(entry["sha256"]) == 64 and (store.path / entry["file"]).exists()
    shutil.rmtree(store.path)


def test_chosen_layers_match_every_layer_capture(model_and_tokenizer, batch):
    model, _ = model_and_tokenizer
    _, (ids, real, response) = batch
    specs = parse_specs(["mlp.mean", "final.weighted"])
    every = capture_batch(model, ids, real, response, specs)
    some = capture_batch(model, ids, real, response, specs, layers=[1, 3])
    assert torch.equal(some["mlp.mean"], every["mlp.mean"][:, [1, 3]])
    assert torch.equal(some["final.weighted"], every["final.weighted"])


def test_bf16_pooling_stays_close_to_fp32(model_and_tokenizer, batch):
    """Pooling bf16 activations (one bf16 matmul, fp32 accumulation) against fp32 pooling of
    the same activations: only the inputs' and result's rounding differ."""
    from naitbench.features.capture import pool

    _, (_, real, response) = batch
    hidden = torch.randn(*real.shape, 32, generator=torch.Generator().manual_seed(0))
    for pooling in ("mean", "last", "weighted"):
        exact = pool(hidden, response, real, pooling)
        rounded = pool(hidden.bfloat16(), response, real, pooling)
        assert rounded.dtype == torch.float32
        torch.testing.assert_close(rounded, exact, rtol=2e-2, atol=2e-2)


def test_a_store_of_chosen_layers(tmp_path, prepared_smoke, tiny_model_dir):
    pool = prepared_smoke / "pool" / "pool.jsonl"
    args = dict(root=tmp_path, max_length=128, batch_size=4, shard_size=8, precision="fp32")
    every, _ = ensure_features(pool, tiny_model_dir, ["mlp.mean"], **args)
    some, _ = ensure_features(pool, tiny_model_dir, ["mlp.mean"], layers=[2, 1], **args)
    assert some.path != every.path and some.index["layers"] == [1, 2]
    assert some.n_layers(Spec("mlp", "mean")) == every.n_layers(Spec("mlp", "mean")) == 4
    np.testing.assert_allclose(some.load("mlp.mean", [2]), every.load("mlp.mean", [2]),
                               rtol=1e-5, atol=1e-6)
    assert some.load("mlp.mean").shape[1] == 2
    with pytest.raises(KeyError, match=r"records layers \[1, 2\] only, not \[0\]"):
        some.load("mlp.mean", [0, 1])
    with pytest.raises(ValueError, match=r"features\.layers"):
        ensure_features(pool, tiny_model_dir, ["mlp.mean"], layers=[-1], **args)
    bf16, _ = ensure_features(pool, tiny_model_dir, ["mlp.mean"], **{**args, "shard_size": 64,
                                                                      "precision": "bf16"})
    assert bf16.path != every.path
    # what extracted each store is recorded, and its precision is part of the key
    assert every.compute == {"precision": "fp32", "device": "cpu"}
    assert bf16.compute == {"precision": "bf16", "device": "cpu"}


def test_a_second_extraction_differs_only_in_ignored_timing_files(tmp_path, prepared_smoke,
                                                                   tiny_model_dir):
    """Wall times live in `*.timing.json` beside the arrays, which .dvcignore keeps out of
    the features output's hash: extracting the same store again changes no hashed byte."""
    from naitbench.features.store import TIMING

    pool = prepared_smoke / "pool" / "pool.jsonl"
    stores = [ensure_features(pool, tiny_model_dir, ["mlp.mean", "final.weighted"],
                              root=tmp_path / name, max_length=64, shard_size=16)[0]
              for name in ("a", "b")]

    def hashed(store: FeatureStore) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in store.path.iterdir()
                if not p.name.endswith(".timing.json")}

    assert hashed(stores[0]) == hashed(stores[1])
    assert "wall_s" not in stores[0].index["cost"]
    assert stores[0].cost["wall_s"] > 0 and (stores[0].path / TIMING).exists()
    dvcignore = (REPO / ".dvcignore").read_text().splitlines()
    assert "*.timing.json" in dvcignore and TIMING.endswith(".timing.json")
