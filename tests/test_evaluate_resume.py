"""Reliability: an evaluate stage killed between tasks resumes with identical outputs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import lm_eval
from conftest import smoke_overrides

from naitbench.config import compose
from naitbench.evaluate import METRICS_FILE, RESULTS_FILE, SAMPLES_FILE, evaluate, resume_dir

TASKS = "eval.tasks=[nb_humaneval_bpb,nb_gsm8k_bpb]"


def test_killed_evaluation_resumes_with_identical_outputs(prepared_smoke, embedded_model_dir,
                                                          data_root, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(prepared_smoke / "targets", data / "targets")
    overrides = [*smoke_overrides(data, embedded_model_dir, data_root), TASKS,
                 "tracking=disabled", "eval.subset=null"]
    cfg = compose(overrides)
    reference = tmp_path / "reference"
    evaluate(cfg.eval, embedded_model_dir, reference, data_dir=data)

    kept = resume_dir(data, None, 0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    stage = subprocess.Popen([sys.executable, "-m", "naitbench.evaluate", *overrides,
                              f"hydra.run.dir={tmp_path / 'hydra'}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(kept.glob("nb_humaneval_bpb-*.json")):
        assert stage.poll() is None and time.monotonic() < deadline, "no task finished"
        time.sleep(0.02)
    stage.send_signal(signal.SIGKILL)                 # killed while scoring the second task
    stage.wait()
    out = data / "scores" / "base"
    assert not (out / METRICS_FILE).exists(), "the stage finished before it could be killed"
    assert not list(kept.glob("nb_gsm8k_bpb-*.json"))

    calls = []
    real = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate",
                        lambda **kw: calls.append(kw["tasks"][0]["task"]) or real(**kw))
    evaluate(cfg.eval, embedded_model_dir, out, data_dir=data, resume_dir=kept)
    assert calls == ["nb_gsm8k_bpb"]                  # the finished task was not re-run
    for name in (METRICS_FILE, RESULTS_FILE, SAMPLES_FILE):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not kept.exists()                          # removed once the outputs are written
