"""The medium profile (one GPU, the ShareGPT pool) as a CPU slice: the profile's own pool
source, length policy and matrix shape through every DVC stage, on a few hundred records, the
tiny model and a few training steps. The smoke pipeline test covers every selector; here the
matrix keeps the headline methods, both targets (the transfer matrix) and one random draw."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import repo_copy, run_ok

from naitbench.io import read_jsonl

SLICE = ["pool.size=200", "model=tiny", "model@raters.second=tiny",
         "raters.second.name=tiny-rater", "train.max_steps=2", "train.epochs=1",
         "train.full_epochs=1", "train.batch_size=4", "runs.targeted=[nait,rds]",
         "runs.untargeted=[length]", "runs.random_seeds=[0]", "runs.seeds=[0]",
         "runs.method_seeds.nait=[0]", "runs.method_seeds.rds=[0]",
         "targets.code.indomain_size=8", "targets.math.indomain_size=8",
         "targets.math.heldout_size=8", "eval.limit=4", "tracking=disabled"]


@pytest.mark.slow
def test_medium_profile_slice_runs_every_stage_and_trains_what_it_selects(tmp_path, data_root):
    copy, env = repo_copy(tmp_path)
    overrides = ["profile=medium", f"paths.data_root={data_root}", *SLICE]
    run_ok([sys.executable, "-m", "naitbench.config", "dump", *overrides], copy, env)
    estimate = run_ok([sys.executable, "-m", "naitbench.estimate"], copy, env)
    # the slice's tiny model has no rates: the estimate says so instead of a wrong figure
    assert "No estimate for profile 'medium': no rates for model tiny-llama" in estimate
    out = run_ok([sys.executable, "-m", "dvc", "repro"], copy, env)
    for stage in ("prepare_model", "prepare_data", "features", "select@nait-code-0.1",
                  "select@rds-math-0.1", "select_untargeted@length-0.1", "select_random@0.1-0",
                  "train@nait-math-r0.1-s0-seed0", "train_full@0", "evaluate_base",
                  "evaluate_full@0", "evaluate@rds-code-r0.1-s0-seed0", "report"):
        assert f"Running stage '{stage}'" in out, stage
    data = copy / "data"
    report = json.loads((data / "prepare_report.json").read_text())
    pool = report["pool"]
    assert pool["sampled"] == 200 and pool["length_policy"]["policy"] == "drop"
    assert pool["kept"] == 200 - pool["length_policy"]["dropped"] > 0
    assert report["bad_records"]["cut_off"][0]["records_recovered"] == \
        pool["conversations_recovered"]
    pool_ids = [r["id"] for r in read_jsonl(data / "pool" / "pool.jsonl")]
    assert len(pool_ids) == pool["kept"]
    runs = {"full": len(pool_ids)}
    for path in sorted((data / "subsets").glob("*.jsonl")):
        if not path.name.endswith(".scores.jsonl"):
            runs[path.stem] = len(read_jsonl(path))
    assert len(runs) == 7  # full + 2 methods x 2 targets + length + random
    for subset, selected in runs.items():  # the trainer drops nothing it is given
        metrics = json.loads((data / "runs" / subset / "seed0" / "train_metrics.json")
                             .read_text())
        assert metrics["examples"] == metrics["examples_trained"] == selected, subset
    rows = json.loads((data / "report" / "comparison.json").read_text())["rows"]
    scored = {(r["arm"], r["task"]) for r in rows}
    for method in ("nait", "rds"):  # the transfer matrix: each target's subset, both tasks
        for target in ("code", "math"):
            for task in ("nb_humaneval_bpb", "nb_gsm8k_bpb"):
                assert (f"{method}/{target}/0.1", task) in scored
    assert "Transfer" in (data / "report" / "report.md").read_text()
