"""Reliability: the features, train and evaluate stages, killed (SIGKILL) midway as a real
process, resume to outputs identical to an uninterrupted run. They run on SmolLM2-135M so
that each stage lasts long enough to be caught in the middle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lm_eval
import numpy as np
import pytest
from conftest import REPO, smoke_overrides
from safetensors.torch import load_file

from naitbench.config import compose
from naitbench.evaluate import METRICS_FILE, RESULTS_FILE, SAMPLES_FILE, evaluate, resume_dir
from naitbench.features import FeatureStore, ensure_features
from naitbench.train import MODEL_SUBDIR, checkpoint_dir, load_examples, run_dir, train


def _kill_midway(module: str, overrides: list[str], tmp: Path, ready: Callable[[], bool],
                 done: Path) -> None:
    """Start `python -m module overrides` (from the repo, as DVC runs it), SIGKILL it once
    `ready()`, and check it had not finished (`done` absent): the kill came in the middle."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    stage = subprocess.Popen([sys.executable, "-m", module, *overrides,
                              f"hydra.run.dir={tmp / 'hydra'}"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ready():
        assert stage.poll() is None, f"{module} ended before it could be killed"
        assert time.monotonic() < deadline, f"{module} made no progress"
        time.sleep(0.02)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    assert not done.exists(), f"{module} finished before the kill"


@pytest.fixture
def workspace(prepared_smoke, embedded_model_dir, data_root, tmp_path):
    """A data dir with the smoke pool and targets, and overrides that run SmolLM2 on it."""
    data = tmp_path / "data"
    for sub in ("pool", "targets"):
        shutil.copytree(prepared_smoke / sub, data / sub)
    return data, [*smoke_overrides(data, embedded_model_dir, data_root), "tracking=disabled"]


def test_killed_feature_extraction_resumes_to_identical_features(workspace, embedded_model_dir,
                                                                 tmp_path):
    data, overrides = workspace
    overrides += ["features.shard_size=4", "features.batch_size=4",
                  f"features.root={data / 'features'}"]
    cfg = compose(overrides)
    pool = data / "pool" / "pool.jsonl"
    args = dict(root=tmp_path / "whole", max_length=cfg.features.max_length, batch_size=4,
                shard_size=4)
    whole, _ = ensure_features(pool, embedded_model_dir, list(cfg.features.specs), **args)

    def two_shards() -> bool:
        return any(len(FeatureStore(p).index["shards"]) >= 2 for p in
                   (data / "features").glob("pool-*") if (p / "index.json").exists())

    _kill_midway("naitbench.features", overrides, tmp_path, two_shards,
                 data / "features" / "summary.json")
    resumed, cost = ensure_features(pool, embedded_model_dir, list(cfg.features.specs),
                                    **{**args, "root": data / "features"})
    assert 0 < cost["forward_tokens"] < whole.cost["forward_tokens"]   # only what was missing
    for spec in cfg.features.specs:
        np.testing.assert_array_equal(resumed.load(spec), whole.load(spec))


def test_killed_training_resumes_to_identical_weights(workspace, embedded_model_dir, tmp_path):
    data, overrides = workspace
    overrides += ["train.subset=full", "train.seed=0", "train.max_steps=6",
                  "train.checkpoint_every=2", "train.max_length=96", "train.batch_size=2"]
    cfg = compose(overrides)
    whole = tmp_path / "whole"
    train(cfg.train, embedded_model_dir, load_examples(data, "full"), whole, seed=0,
          checkpoint_dir=tmp_path / "whole-checkpoints")
    ckpts = checkpoint_dir(data, "full", 0)
    out = run_dir(data, "full", 0)
    _kill_midway("naitbench.train", overrides, tmp_path,
                 lambda: any(ckpts.glob("step-*/state.json")), out / MODEL_SUBDIR)
    train(cfg.train, embedded_model_dir, load_examples(data, "full"), out, seed=0,
          checkpoint_dir=ckpts)
    a = load_file(whole / MODEL_SUBDIR / "adapter_model.safetensors")
    b = load_file(out / MODEL_SUBDIR / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_killed_evaluation_resumes_with_identical_outputs(workspace, embedded_model_dir,
                                                          tmp_path, monkeypatch):
    data, overrides = workspace
    overrides += ["eval.tasks=[nb_humaneval_bpb,nb_gsm8k_bpb]", "eval.subset=null"]
    cfg = compose(overrides)
    reference = tmp_path / "reference"
    evaluate(cfg.eval, embedded_model_dir, reference, data_dir=data)
    kept, out = resume_dir(data, None, 0), data / "scores" / "base"
    _kill_midway("naitbench.evaluate", overrides, tmp_path,
                 lambda: any(kept.glob("nb_humaneval_bpb-*.json")), out / METRICS_FILE)
    assert not list(kept.glob("nb_gsm8k_bpb-*.json"))     # killed during the second task

    calls = []
    real = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate",
                        lambda **kw: calls.append(kw["tasks"][0].config.task) or real(**kw))
    evaluate(cfg.eval, embedded_model_dir, out, data_dir=data, resume_dir=kept)
    assert calls == ["nb_gsm8k_bpb"]                      # the finished task was not re-run
    for name in (METRICS_FILE, RESULTS_FILE, SAMPLES_FILE):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not kept.exists()                              # removed once the outputs exist
