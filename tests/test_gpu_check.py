"""benchmarks/gpu_check.py's dry run on the CPU with the tiny model, in a subprocess where the
packages a lent GPU machine lacks cannot be imported (as if not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO

ABSENT = ("omegaconf", "hydra", "dvc", "lm_eval", "datasets", "wandb", "gguf")
# Replaces the path finder so that find_spec says "not installed" for ABSENT (an import
# raises ModuleNotFoundError, availability checks see None), then runs the script.
LAUNCH = f"""
import importlib.machinery, runpy, sys
ABSENT = {ABSENT!r}
class Finder(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [Finder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ABSENT)
assert not leaked, leaked
"""


def test_gpu_check_dry_run_without_the_pipeline_packages(tmp_path, tiny_model_dir,
                                                          prepared_smoke):
    out = tmp_path / "gpu_check.jsonl"
    args = [sys.executable, "-c", LAUNCH, str(REPO / "benchmarks" / "gpu_check.py"), "--dry",
            "--model", str(tiny_model_dir), "--pool", str(prepared_smoke / "pool" / "pool.jsonl"),
            "--target", str(prepared_smoke / "targets" / "code" / "indomain.jsonl"),
            "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["row"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == ["setup", "extraction_vs_full_forward", "batched_scoring",
                          "lora_training", "medium_slice_select", "medium_slice_train", "done"]
    assert rows["setup"]["weights"] == "loaded"
    assert rows["extraction_vs_full_forward"]["ratio"] > 0
    assert rows["batched_scoring"]["max_abs_logprob_difference"] < 1e-3   # padding-free
    assert rows["lora_training"]["tokens_per_s"] > 0
    assert rows["medium_slice_select"]["selected"] == 1
    assert rows["medium_slice_train"]["tokens"] > 0


def test_gpu_check_stops_starting_work_at_its_deadline(tmp_path, tiny_model_dir, prepared_smoke):
    """Also: a model directory without weights (config and tokenizer only, as carried onto a
    GPU machine) gets random weights of that shape."""
    config_only = tmp_path / "model"
    shutil.copytree(tiny_model_dir, config_only, ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "gpu_check.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry",
                    "--model", str(config_only), "--budget-s", "30",
                    "--pool", str(prepared_smoke / "pool" / "pool.jsonl"),
                    "--target", str(prepared_smoke / "targets" / "code" / "indomain.jsonl"),
                    "--out", str(out)], check=True, capture_output=True, cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in rows if "skipped" in r] == [
        "extraction_vs_full_forward", "batched_scoring", "lora_training", "medium_slice_select"]
    assert rows[0]["weights"] == "random" and rows[-1]["row"] == "done"
