"""The run-time estimate printed before `dvc repro` counts the matrix's work as hand-computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from naitbench.config import compose
from naitbench.estimate import estimate, machine_speed, probe_seconds, render

RATES = {"tokens_per_record": 100, "stage_startup_s": 0, "prepare_s": 7, "features_tok_s": 10,
         "forward_tok_s": 10, "ifd_passes": 2, "rating_tok_s": 10, "encoder_tok_s": 10,
         "grad_tok_s": 10, "train_tok_s": 10, "eval_s_per_item": 1, "report_s": 3}


def test_estimate_matches_a_hand_computed_smoke_matrix(tmp_path):
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path}", "eval.tasks=[nb_humaneval_bpb]"]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    parts = estimate(compose(overrides))
    # pool 50 records x 100 tokens = 5,000; code in-domain 8, math 8: 1,600 target tokens
    assert parts["features (one pass)"] == pytest.approx((5000 + 1600) / 10)
    # 12 subsets at 10% (5 targeted, 4 untargeted, 3 random) = 6,000 tokens x 1 epoch,
    # plus the full pool for 1 epoch, at 10 tokens/s
    assert parts["train (LoRA, every subset and seed)"] == pytest.approx((6000 + 5000) / 10)
    # 12 subsets + full + base, 8 held-out code items each, eval.limit=4 of them, 1 s each
    assert parts["evaluate (lm-eval, every model)"] == pytest.approx(14 * 4)
    # kNN (pool + 800 code tokens), perplexity, IFD (2 passes), SelectIT (3 prompts x 2
    # models), LESS (2 warmup epochs over pool x 1.1 + code in-domain); NAIT, RDS+, length,
    # random need no pass of their own (nor does NAIT's variant)
    select = (5800 + 5000 + 10000 + 30000 + 2 * (5500 + 800)) / 10
    assert parts["select (every method)"] == pytest.approx(select)
    assert sum(parts.values()) == pytest.approx(7 + 660 + select + 1100 + 56 + 3)
    assert "total" in render(parts, "smoke")


def test_estimate_counts_the_medium_matrix(tmp_path):
    overrides = ["profile=medium", f"paths.data_dir={tmp_path}", "pool.size=300",
                 "eval.tasks=[nb_gsm8k_bpb]"]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    cfg = compose(overrides)
    parts = estimate(cfg)
    # 19 subsets of 30 records x 100 tokens (nait, nait_variant, rds, knn, less for code and
    # math; length, perplexity, ifd, selectit; 5 random), NAIT's and RDS+'s 4 subsets once
    # more (training seed 1), and the full pool once, 2 epochs each
    assert parts["train (LoRA, every subset and seed)"] == pytest.approx(
        ((19 + 4) * 3000 * 2 + 30000 * 2) / 10)
    # 23 trained subsets + full + base = 25 models, 150 held-out GSM8K items each
    assert parts["evaluate (lm-eval, every model)"] == pytest.approx(25 * 150)
    assert "profile 'medium' on one GPU" in render(parts, "medium", cfg.estimate.machine)


def test_every_task_of_the_pack_is_mapped_to_the_target_its_data_comes_from():
    from lm_eval.tasks._yaml_loader import load_yaml

    from naitbench.estimate import TASK_TARGETS
    from naitbench.evaluate import TASK_DIR, available_tasks

    assert sorted(TASK_TARGETS) == available_tasks()
    for name in available_tasks():
        files = load_yaml(TASK_DIR / f"{name}.yaml", resolve_func=False)["dataset_kwargs"]
        targets = {Path(rel).parent.name for rel in files["data_files"].values()}
        assert targets == {TASK_TARGETS[name]}, name


def test_replicated_methods_add_their_extra_training_runs(tmp_path):
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path}", "eval.tasks=[nb_humaneval_bpb]"]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    once = estimate(compose(overrides))
    twice = estimate(compose([*overrides, "++runs.method_seeds={nait: [0, 1]}"]))
    # one more NAIT subset (5 records x 100 tokens, 1 epoch, 10 tokens/s) and one more model
    # to score (4 items at 1 s)
    key = "train (LoRA, every subset and seed)"
    assert twice[key] - once[key] == pytest.approx(500 / 10)
    key = "evaluate (lm-eval, every model)"
    assert twice[key] - once[key] == pytest.approx(4)


def test_the_probe_scales_every_stage_by_the_machine_speed(tmp_path):
    cfg = compose(["profile=smoke", f"paths.data_dir={tmp_path}",
                   *[f"estimate.{k}={v}" for k, v in RATES.items()],
                   "estimate.probe_reference_s=3.0"])
    assert machine_speed(cfg.estimate, 1.5) == pytest.approx(2.0)   # twice as fast
    assert machine_speed(cfg.estimate, None) == 1.0
    reference, here = estimate(cfg), estimate(cfg, speed=2.0)
    assert all(here[k] == pytest.approx(v / 2) for k, v in reference.items())
    assert "x 2.00" in render(here, "smoke", speed=2.0)
    assert probe_seconds(repeats=1) > 0
