"""The run-time estimate printed before `dvc repro` counts the matrix's work as hand-computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from naitbench.config import compose
from naitbench.estimate import (
    EVALUATE,
    TRAIN,
    NoRates,
    arm_tokens,
    cpu_precisions,
    estimate,
    gpu_rates,
    heldout_items,
    machine_speed,
    plan,
    pool_lengths,
    probe_seconds,
    render,
)
from naitbench.io import read_jsonl
from naitbench.models.precision import cpu_has_native_bf16

RATES = {"tokens_per_record": 100, "stage_startup_s": 0, "prepare_s": 7, "features_tok_s": 10,
         "forward_tok_s": 10, "ifd_passes": 2, "rating_tok_s": 10, "encoder_tok_s": 10,
         "grad_tok_s": 10, "train_tok_s": 10, "eval_s_per_item": 1, "report_s": 3}


#: no record is cut at the training or extraction length: the hand counts stay exact
UNCUT = ["train.max_length=100000", "features.max_length=100000"]


def longest_responses(cfg, keep: int) -> float:
    """Tokens of the `keep` records with the longest responses (the length arm's subset)."""
    lengths = pool_lengths(cfg)
    return sum(p + r for p, r in sorted(lengths, key=lambda x: -x[1])[:keep])


def test_estimate_matches_a_hand_computed_smoke_matrix(tmp_path):
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path}", "eval.tasks=[nb_humaneval_bpb]",
                 *UNCUT]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    cfg = compose(overrides)
    parts = estimate(cfg)
    # pool 50 records, their lengths scaled to a mean of 100 tokens = 5,000; code in-domain 8,
    # math 8: 1,600 target tokens
    assert parts["features (one pass)"] == pytest.approx((5000 + 1600) / 10)
    # 15 subsets at 10%: 14 of them (8 targeted: 7 methods and the rds+uot rule arm;
    # perplexity, IFD, SelectIT, 3 random) 5 mean records = 500 tokens, the length arm its 5
    # longest responses; plus the full pool, 1 epoch each at 10 tokens/s
    length = longest_responses(cfg, 5)
    assert length > 2 * 500   # the length arm trains long records
    assert parts["train (LoRA, every subset and seed)"] == pytest.approx(
        (14 * 500 + length + 5000) / 10)
    # 15 subsets + full + base, 8 held-out code items each, eval.limit=4 of them, 1 s each
    assert parts["evaluate (lm-eval, every model)"] == pytest.approx(17 * 4)
    # kNN (pool + 800 code tokens), perplexity, IFD (2 passes), SelectIT (3 prompts x 2
    # models), LESS (2 warmup epochs over pool x 1.1 + code in-domain); NAIT, RDS+, length,
    # random need no pass of their own (nor do NAIT's variant, BM25, DSIR and rds+uot)
    select = (5800 + 5000 + 10000 + 30000 + 2 * (5500 + 800)) / 10
    assert parts["select (LESS warmup, gradients)"] == pytest.approx(2 * (5500 + 800) / 10)
    assert parts["select (every other method)"] + parts[
        "select (LESS warmup, gradients)"] == pytest.approx(select)
    train = (14 * 500 + length + 5000) / 10
    assert sum(parts.values()) == pytest.approx(7 + 660 + select + train + 68 + 3)
    assert "total" in render(parts, "smoke")


def test_a_prepared_pool_gives_its_own_token_counts(prepared_smoke):
    cfg = compose(["profile=smoke", f"paths.data_dir={prepared_smoke}", *UNCUT])
    pool = read_jsonl(prepared_smoke / "pool" / "pool.jsonl")
    assert pool_lengths(cfg) == [(r["n_prompt_tokens"], r["n_response_tokens"]) for r in pool]
    longest = sorted(pool, key=lambda r: -r["n_response_tokens"])[:5]
    assert arm_tokens(cfg, pool_lengths(cfg), "length-r0.1-s0", 0.1) == sum(
        r["n_prompt_tokens"] + r["n_response_tokens"] for r in longest)


def test_held_out_items_follow_the_target_config(tmp_path):
    cfg = compose(["profile=embedded", f"paths.data_dir={tmp_path}"])
    assert heldout_items(cfg, "code") == 164 - 60   # heldout_size null: every remaining item
    assert heldout_items(cfg, "math") == 100        # the embedded profile's heldout_size


def test_estimate_counts_the_medium_matrix(tmp_path):
    overrides = ["profile=medium", f"paths.data_dir={tmp_path}", "pool.size=300",
                 "eval.tasks=[nb_gsm8k_bpb]", *UNCUT]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    cfg = compose(overrides)
    parts = estimate(cfg)
    # 19 subsets of 30 records (nait, nait_variant, rds, knn, less for code and math; length,
    # perplexity, ifd, selectit; 5 random), NAIT's and RDS+'s 4 subsets once more (training
    # seed 1), and the full pool once, 2 epochs each: 30 mean records are 3,000 tokens, the
    # length arm's 30 longest responses more
    assert parts["train (LoRA, every subset and seed)"] == pytest.approx(
        ((18 + 4) * 3000 * 2 + longest_responses(cfg, 30) * 2 + 30000 * 2) / 10)
    # 23 trained subsets + full + base = 25 models, 150 held-out GSM8K items each
    assert parts["evaluate (lm-eval, every model)"] == pytest.approx(25 * 150)


def test_a_gpu_uses_its_own_rates_or_says_it_has_none(tmp_path):
    cfg = compose(["profile=medium", f"paths.data_dir={tmp_path}"])
    rates = gpu_rates(cfg, "NVIDIA H200")
    assert rates["train_tok_s"] == cfg.estimate.gpu.H200.train_tok_s != cfg.estimate.train_tok_s
    with pytest.raises(NoRates, match=r"no rates for this GPU \(NVIDIA A100-SXM4-80GB\) and "
                                      r"model smollm2-135m-instruct"):
        gpu_rates(cfg, "NVIDIA A100-SXM4-80GB")
    with pytest.raises(NoRates, match="no rates for model gemma3-270m"):
        plan(compose(["profile=embedded-base", f"paths.data_dir={tmp_path}"]), probe=False)


def test_the_cpu_stages_are_timed_in_the_precision_auto_resolves_to():
    cfg = compose(["profile=embedded"])
    native = "bf16" if cpu_has_native_bf16() else "fp32"
    precision = cpu_precisions(cfg)
    assert precision["features (one pass)"] == precision["train (LoRA, every subset and seed)"] \
        == native
    assert precision["evaluate (lm-eval, every model)"] == "fp32"   # eval.dtype auto on a CPU
    assert precision["select (every other method)"] == native   # select.precision auto
    assert precision["select (LESS warmup, gradients)"] == native
    forced = cpu_precisions(compose(["profile=embedded", "train.precision=fp32",
                                     "eval.dtype=bfloat16", "select.precision=fp32"]))
    assert forced["train (LoRA, every subset and seed)"] == "fp32"
    assert forced["evaluate (lm-eval, every model)"] == "bf16"
    assert forced["select (every other method)"] == forced[
        "select (LESS warmup, gradients)"] == "fp32"


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
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path}", "eval.tasks=[nb_humaneval_bpb]",
                 *UNCUT]
    overrides += [f"estimate.{k}={v}" for k, v in RATES.items()]
    once = estimate(compose(overrides))
    twice = estimate(compose([*overrides, "++runs.method_seeds={nait: [0, 1]}"]))
    # one more NAIT subset (5 records x 100 tokens, 1 epoch, 10 tokens/s) and one more model
    # to score (4 items at 1 s)
    key = "train (LoRA, every subset and seed)"
    assert twice[key] - once[key] == pytest.approx(500 / 10)
    key = "evaluate (lm-eval, every model)"
    assert twice[key] - once[key] == pytest.approx(4)


def test_selection_seeds_add_their_selections_runs_and_models(tmp_path):
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path}", "eval.tasks=[nb_humaneval_bpb]",
                 *UNCUT, *[f"estimate.{k}={v}" for k, v in RATES.items()],
                 "estimate.stage_startup_s=2"]
    once = estimate(compose(overrides))
    twice = estimate(compose([*overrides, "++runs.selection_seeds={nait: [0, 1]}"]))
    # one more NAIT select stage (startup only: it reads stored features), one more subset to
    # train (5 records x 100 tokens, 1 epoch, 10 tokens/s, one startup) and to score (4 items)
    assert twice["select (every other method)"] - once[
        "select (every other method)"] == pytest.approx(2)
    key = "train (LoRA, every subset and seed)"
    assert twice[key] - once[key] == pytest.approx(500 / 10 + 2)
    assert twice["evaluate (lm-eval, every model)"] - once[
        "evaluate (lm-eval, every model)"] == pytest.approx(4 + 2)


def test_cells_at_once_divide_train_and_evaluate_by_the_measured_gain(tmp_path):
    cfg = compose(["profile=smoke", f"paths.data_dir={tmp_path}",
                   *[f"estimate.{k}={v}" for k, v in RATES.items()],
                   "estimate.cells_gain={cells: 2, train: {bf16: 1.6, fp32: 0.9}, "
                   "evaluate: 1.25}"])
    serial, paired = estimate(cfg), estimate(cfg, cells=2)
    train, score = "train (LoRA, every subset and seed)", "evaluate (lm-eval, every model)"
    assert paired[train] == pytest.approx(serial[train] / 0.9)      # fp32 unless told
    assert estimate(cfg, cells=2, train_precision="bf16")[train] == pytest.approx(
        serial[train] / 1.6)
    assert paired[score] == pytest.approx(serial[score] / 1.25)
    assert all(paired[k] == v for k, v in serial.items() if k not in (train, score))
    measured = estimate(cfg, cells=2, train_precision="fp16",
                        cells_gains={TRAIN: 1.9, EVALUATE: 1.4})
    assert measured[train] == pytest.approx(serial[train] / 1.9)   # this machine's, measured
    assert measured[score] == pytest.approx(serial[score] / 1.4)
    unscored = estimate(cfg, cells=2, train_precision="fp16", cells_gains={TRAIN: 1.9})
    assert unscored[score] == pytest.approx(serial[score] / 1.25)   # the profile's
    with pytest.raises(NoRates, match="measured with 2 cells at once, not 3"):
        estimate(cfg, cells=3)
    with pytest.raises(NoRates, match="no gain measured for fp16 training"):
        estimate(cfg, cells=2, train_precision="fp16")


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


#: a short run of the smoke profile's matrix on the embedded model (the model the rates are
#: for): a 20-record pool, one random subset, the full pool, scoring 8 code items per model
SHORT_RUN = ["profile=smoke", "model=embedded", "pool.size=20", "runs.targeted=[]",
             "runs.untargeted=[]", "runs.random_seeds=[0]", "runs.seeds=[0]",
             "runs.method_seeds={}", "train.epochs=1", "train.full_epochs=1",
             "eval.tasks=[nb_humaneval_bpb]", "eval.limit=8", "tracking=disabled"]
#: measured / estimated wall time of that run must lie in this range: the rates come from
#: another machine through two probes, and the CPU is shared with other jobs
TOLERANCE = (0.5, 2.0)


@pytest.mark.slow
def test_the_estimate_matches_a_short_measured_run(tmp_path, embedded_model_dir, data_root):
    import subprocess
    import sys
    import time

    from omegaconf import OmegaConf

    from naitbench.data.prepare import prepare
    from naitbench.estimate import FEATURES, SELECT, SELECT_GRADS

    args = [*SHORT_RUN, f"paths.data_dir={tmp_path / 'data'}", f"model.dir={embedded_model_dir}",
            f"paths.data_root={data_root}"]
    cfg = compose(args)
    prepare(cfg)
    here = plan(cfg)
    parts = estimate(OmegaConf.merge(cfg, {"estimate": here.rates}), here.speed)
    predicted = sum(parts[k] for k in (FEATURES, SELECT, SELECT_GRADS, TRAIN, EVALUATE))
    hydra = [f"hydra.run.dir={tmp_path / 'hydra'}", "hydra.output_subdir=null"]
    stages = [["naitbench.features"],
              ["naitbench.select", "select.method=random", "ratio=0.1", "seed=0",
               "select.name=random-r0.1-s0"],
              ["naitbench.train", "train.subset=random-r0.1-s0", "train.seed=0"],
              ["naitbench.train", "train.subset=full", "train.seed=0"],
              ["naitbench.evaluate", "eval.subset=null"],
              ["naitbench.evaluate", "eval.subset=random-r0.1-s0", "eval.train_seed=0"],
              ["naitbench.evaluate", "eval.subset=full", "eval.train_seed=0"]]
    start = time.perf_counter()
    for module, *extra in stages:
        subprocess.run([sys.executable, "-m", module, *args, *hydra, *extra], check=True,
                       capture_output=True)
    measured = time.perf_counter() - start
    ratio = measured / predicted
    print(f"short smoke run: measured {measured:.0f} s, estimated {predicted:.0f} s")
    assert TOLERANCE[0] <= ratio <= TOLERANCE[1], (
        f"measured {measured:.0f} s, estimated {predicted:.0f} s ({parts}; {here.notes})")
