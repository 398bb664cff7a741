"""Data-parallel feature extraction: `accelerate launch` with 2 CPU processes writes the same
features (and the same shard layout) as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from naitbench.features import FeatureStore, ensure_features

REPO = Path(__file__).resolve().parents[1]
SPECS = ["mlp.mean", "final.weighted"]


def test_two_processes_match_one(tiny_model_dir, prepared_smoke, tmp_path):
    (tmp_path / "pool").symlink_to(prepared_smoke / "pool")
    (tmp_path / "targets").symlink_to(prepared_smoke / "targets")
    args = ["profile=smoke", f"model.dir={tiny_model_dir}", f"paths.data_dir={tmp_path}",
            f"features.specs=[{','.join(SPECS)}]", "features.shard_size=16",
            "features.max_length=128", f"hydra.run.dir={tmp_path}/hydra",
            "hydra.output_subdir=null"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                           "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "naitbench.features", *args],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "features" / "summary.json").read_text())
    timing = json.loads((tmp_path / "features" / "summary.timing.json").read_text())
    assert set(summary) == {"pool", "code", "math"}
    assert {info["num_processes"] for info in summary.values()} == {2}
    two = FeatureStore(summary["pool"]["store"])
    assert not list(two.path.glob("index.rank*.json"))
    assert timing["pool"]["this_call"]["forward_tokens"] > 0, timing
    one, cost = ensure_features(prepared_smoke / "pool" / "pool.jsonl", tiny_model_dir, SPECS,
                                root=tmp_path / "single", max_length=128, shard_size=16)
    assert two.ids == one.ids and len(one.index["shards"]) == 4   # 50 records: 2 shards a rank
    assert [s["start"] for s in two.index["shards"]] == [s["start"] for s in one.index["shards"]]
    assert two.cost["forward_tokens"] == cost["forward_tokens"]
    for spec in SPECS:
        np.testing.assert_allclose(two.load(spec), one.load(spec), atol=2e-5)


def test_parts_left_by_an_interrupted_run_are_folded_in(tiny_model_dir, prepared_smoke,
                                                        tmp_path):
    """A rank's index part from a killed data-parallel run counts: only the rest is computed."""
    pool = prepared_smoke / "pool" / "pool.jsonl"
    kwargs = {"root": tmp_path, "max_length": 128, "shard_size": 16}
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_features(pool, tiny_model_dir, SPECS, fail_after_shards=2, **kwargs)
    store = next(tmp_path.iterdir())
    (store / "index.json").rename(store / "index.rank001.json")   # as rank 1 left it
    resumed, cost = ensure_features(pool, tiny_model_dir, SPECS, **kwargs)
    full, full_cost = ensure_features(pool, tiny_model_dir, SPECS, **{**kwargs,
                                                                      "root": tmp_path / "b"})
    assert not list(store.glob("index.rank*.json"))
    assert 0 < cost["forward_tokens"] < full_cost["forward_tokens"]
    assert resumed.cost["forward_tokens"] == full_cost["forward_tokens"]
    for spec in SPECS:
        np.testing.assert_allclose(resumed.load(spec), full.load(spec), atol=2e-5)
