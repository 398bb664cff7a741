"""Fine-tuning on the tiny model: loss mask, learning, determinism, resume, divergence, and the
multi-process path through accelerate."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from naitbench.config import compose
from naitbench.data.length import apply_length_policy
from naitbench.data.template import format_prompt
from naitbench.io import read_jsonl, write_jsonl
from naitbench.models.load import load_tokenizer
from naitbench.train import (
    MODEL_SUBDIR,
    ResumeMismatch,
    TrainingDiverged,
    load_examples,
    train,
)
from naitbench.train.data import (
    IGNORE_INDEX,
    LengthError,
    SubsetError,
    collate,
    encode,
    encode_all,
    epoch_batches,
)
from naitbench.train.loop import ResponseLoss, collate_with_targets

REPO = Path(__file__).resolve().parents[1]


def train_cfg(**overrides) -> dict:
    """The smoke profile's training config with a few test-sized settings, in fp32 unless
    `precision` says otherwise (`auto` would differ between CPUs with and without native bf16;
    the precision-sensitive tests run in both, forced)."""
    cfg = OmegaConf.to_container(compose(["profile=smoke"]).train)
    cfg.update({"precision": "fp32", **overrides})
    return cfg


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def examples(prepared_smoke) -> list[dict]:
    """Eight of the shortest pool records (fast steps)."""
    pool = load_examples(prepared_smoke, "full")
    return sorted(pool, key=lambda r: len(r["prompt"]) + len(r["response"]))[:8]


def test_response_mask_matches_hand_built(tokenizer):
    prompt = format_prompt("Name the capital of France.", "")
    response = "Paris is the capital of France."
    p_ids = tokenizer(prompt)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert tokenizer(prompt + response)["input_ids"] == p_ids + r_ids  # a clean boundary
    enc = encode(tokenizer, prompt, response)
    assert enc["input_ids"] == p_ids + r_ids + [tokenizer.eos_token_id]
    assert enc["labels"] == [IGNORE_INDEX] * len(p_ids) + r_ids + [tokenizer.eos_token_id]


def test_mask_at_a_merged_boundary_and_padding(tokenizer):
    # A code response starts with spaces, which BPE merges with the prompt's last newline:
    # the merged token is trained on, every token wholly inside the prompt is not.
    prompt = format_prompt("Complete the function.", "def f():")
    response = "    return 1"
    enc = encode(tokenizer, prompt, response)
    masked = [t for t, label in zip(enc["input_ids"], enc["labels"], strict=True)
              if label == IGNORE_INDEX]
    trained = [label for label in enc["labels"] if label != IGNORE_INDEX]
    assert prompt.startswith(tokenizer.decode(masked))
    assert tokenizer.decode(trained[:-1]).endswith(response)
    assert trained[-1] == tokenizer.eos_token_id
    short = encode(tokenizer, format_prompt("Say hi.", ""), "Hi.")
    batch = collate([enc, short], pad_id=tokenizer.pad_token_id)
    n = len(short["input_ids"])
    assert batch["labels"][1, :n].tolist() == short["labels"]
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (len(enc["input_ids"]) - n)


def test_truncation_keeps_prompt_and_a_record_without_room_is_never_dropped(tokenizer):
    long = {"id": "a", "prompt": format_prompt("Repeat.", ""), "response": "word " * 200}
    no_room = {"id": "b", "prompt": format_prompt("x " * 300, ""), "response": "ok"}
    kept, counts = encode_all(tokenizer, [long], max_length=64)
    assert [x["id"] for x in kept] == ["a"] and len(kept[0]["input_ids"]) == 64
    assert counts == {"examples": 1, "truncated": 1}
    with pytest.raises(LengthError, match=r"1 of 2 examples keep no response token within "
                                          r"train.max_length=64 \(e.g. \['b'\]\).*prepare_data"):
        encode_all(tokenizer, [long, no_room], max_length=64)


@pytest.mark.parametrize("policy", ["drop", "truncate_prompt"])
def test_a_length_policy_pool_trains_every_selected_record_with_no_drop(
        tiny_model_dir, tokenizer, tmp_path, policy):
    records = []
    for i, instruction in enumerate(["Say hi.", "x " * 300, "Add 2 and 3.", "y " * 90]):
        prompt = format_prompt(instruction, "")
        records.append({"id": f"r{i}", "prompt": prompt, "response": f"Answer {i}.",
                        "n_prompt_tokens": len(tokenizer(prompt)["input_ids"])})
    pool, counts = apply_length_policy(records, tokenizer, policy, 64)
    assert counts["no_room"] == 2 and len(pool) == 4 - counts["dropped"]
    write_jsonl(tmp_path / "pool" / "pool.jsonl", pool)
    write_jsonl(tmp_path / "subsets" / "all.jsonl", [{"id": r["id"]} for r in pool])
    metrics = train(train_cfg(max_length=64, max_steps=1, batch_size=4),
                    tiny_model_dir, load_examples(tmp_path, "all"), tmp_path / "run", seed=0)
    assert metrics["examples"] == metrics["examples_trained"] == len(pool)
    with pytest.raises(LengthError):  # the same records without the policy
        train(train_cfg(max_length=64, max_steps=1), tiny_model_dir, records,
              tmp_path / "raw", seed=0)


def _padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


@pytest.mark.parametrize("n", [99, 985])
def test_length_grouped_batches_vary_with_seed_and_epoch_and_pad_like_a_full_sort(n):
    """A 99-sample subset (a 10% subset of the embedded pool) and the full pool, batch 8:
    two seeds, or two epochs of one seed, share at most a tenth of their batches (1 of 13),
    and the padded token count stays within 5% of a full length sort's."""
    rng = random.Random(n)
    lengths = [max(8, int(math.exp(rng.gauss(5.1, 0.6)))) for _ in range(n)]  # ~Alpaca-GPT4
    by_length = sorted(range(n), key=lambda j: -lengths[j])
    sorted_pad = _padded_tokens(lengths, [by_length[i:i + 8] for i in range(0, n, 8)])
    for seed in range(5):
        runs = [epoch_batches(lengths, 8, s, e, True) for s, e in ((seed, 0), (seed + 1, 0),
                                                                   (seed, 1))]
        for batches in runs:
            assert sorted(i for b in batches for i in b) == list(range(n))
            assert _padded_tokens(lengths, batches) <= 1.05 * sorted_pad
        same = [{frozenset(b) for b in batches} for batches in runs]
        limit = len(runs[0]) // 10
        assert len(same[0] & same[1]) <= limit, "two seeds train the same batches"
        assert len(same[0] & same[2]) <= limit, "two epochs train the same batches"
        assert runs[0] == epoch_batches(lengths, 8, seed, 0, True)   # resumable: pure


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_precision_and_device_that_ran_are_recorded(tiny_model_dir, examples, tmp_path,
                                                        precision):
    metrics = train(train_cfg(max_steps=1, batch_size=4, precision=precision), tiny_model_dir,
                    examples, tmp_path, seed=0)
    assert metrics["compute"] == {"precision": precision, "device": "cpu"}
    assert json.loads((tmp_path / "train_metrics.json").read_text())["compute"] == \
        metrics["compute"]


def test_load_examples_joins_subset_with_pool(prepared_smoke, tmp_path):
    pool = read_jsonl(prepared_smoke / "pool" / "pool.jsonl")
    (tmp_path / "pool").symlink_to(prepared_smoke / "pool")
    ids = [pool[3]["id"], pool[0]["id"]]
    write_jsonl(tmp_path / "subsets" / "pick.jsonl",
                [{"id": i} for i in ids])
    got = load_examples(tmp_path, "pick")
    assert [g["id"] for g in got] == ids
    assert got[0]["prompt"] == pool[3]["prompt"] and got[0]["response"] == pool[3]["response"]
    assert len(load_examples(tmp_path, "full")) == len(pool)
    write_jsonl(tmp_path / "subsets" / "bad.jsonl", [{"id": "0000000000000000"}])
    with pytest.raises(SubsetError, match="not in the pool"):
        load_examples(tmp_path, "bad")
    with pytest.raises(SubsetError, match="run the select stage"):
        load_examples(tmp_path, "missing")


def response_loss(model, tokenizer, examples) -> float:
    """Mean response-token cross-entropy, computed directly (not with the training code)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            p_len = len(tokenizer(ex["prompt"])["input_ids"])
            ids = tokenizer(ex["prompt"] + ex["response"])["input_ids"] + [tokenizer.eos_token_id]
            logits = model(torch.tensor([ids])).logits[0, :-1]
            targets = torch.tensor(ids[1:])
            losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            total += float(losses[p_len - 1:].sum())
            count += len(ids) - p_len
    return total / count


def test_training_lowers_loss_on_its_samples(tiny_model_dir, tokenizer, examples, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = examples[:4]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = response_loss(base, tokenizer, data)
    metrics = train(train_cfg(epochs=8, lr=1e-2, batch_size=2, log_every=1), tiny_model_dir,
                    data, tmp_path / "run", seed=0)
    tuned = PeftModel.from_pretrained(base, tmp_path / "run" / MODEL_SUBDIR)
    after = response_loss(tuned, tokenizer, data)
    assert after < before - 0.5, (before, after)
    saved = json.loads((tmp_path / "run" / "train_metrics.json").read_text())
    assert saved == metrics
    assert metrics["steps"] == 16 == len(metrics["loss_curve"])
    assert metrics["loss_curve"][-1]["loss"] < metrics["loss_curve"][0]["loss"]
    assert metrics["final_loss"] == metrics["loss_curve"][-1]["loss"]
    assert metrics["tokens"] > metrics["response_tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert [e["epoch"] for e in metrics["per_epoch"]] == list(range(1, 9))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_same_weights(tiny_model_dir, examples, tmp_path, precision):
    cfg = train_cfg(max_steps=2, batch_size=2, precision=precision)
    runs = [train(cfg, tiny_model_dir, examples, tmp_path / name, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    weights = [load_file(tmp_path / n / MODEL_SUBDIR / "adapter_model.safetensors")
               for n in "abc"]
    assert runs[0]["loss_curve"] == runs[1]["loss_curve"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_one_process_trains_in_fp32_then_bf16_then_fp32(tiny_model_dir, examples, tmp_path):
    """accelerate's process-wide state must not pin the first call's precision: each call
    runs in its own (bf16 is forced, so this runs on every CPU; emulated where not native)."""
    runs = {}
    for name, precision in (("a", "fp32"), ("b", "bf16"), ("c", "fp32")):
        runs[name] = train(train_cfg(max_steps=2, batch_size=2, precision=precision),
                           tiny_model_dir, examples, tmp_path / name, seed=0)
    assert [runs[n]["precision"] for n in "abc"] == ["no", "bf16", "no"]
    assert runs["a"]["loss_curve"] == runs["c"]["loss_curve"]       # fp32 again, bit for bit
    assert runs["b"]["loss_curve"] != runs["a"]["loss_curve"]       # bf16 really ran
    for step_a, step_b in zip(runs["a"]["loss_curve"], runs["b"]["loss_curve"], strict=True):
        assert step_b["loss"] == pytest.approx(step_a["loss"], rel=2e-2)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_after_interruption_equals_uninterrupted(tiny_model_dir, examples, tmp_path,
                                                        precision):
    # 8 examples, batches of 2, no accumulation: 4 steps per epoch, 2 epochs. Checkpoints at
    # step 3 (mid-epoch) and 4 (epoch end); the interruption comes at step 4 before its
    # checkpoint, so the resumed run restarts mid-epoch from step 3. LoRA dropout is on, so
    # the RNG state must be restored too.
    cfg = train_cfg(epochs=2, batch_size=2, grad_accum=1, checkpoint_every=3, lr=5e-3,
                    precision=precision)
    whole = train(cfg, tiny_model_dir, examples, tmp_path / "whole", seed=0,
                  save_every_epoch=True)

    def stop_at_4(entry: dict) -> None:
        if entry["step"] == 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, tiny_model_dir, examples, tmp_path / "cut", seed=0, save_every_epoch=True,
              callback=stop_at_4)
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-00000003"]
    with pytest.raises(ResumeMismatch, match="another config"):
        train({**cfg, "lr": 1e-3}, tiny_model_dir, examples, tmp_path / "cut", seed=0)
    resumed = train(cfg, tiny_model_dir, examples, tmp_path / "cut", seed=0,
                    save_every_epoch=True)
    assert resumed["resumed_from_step"] == 3
    assert resumed["loss_curve"] == whole["loss_curve"]
    assert resumed["per_epoch"] == whole["per_epoch"]
    for sub in ("model/adapter_model.safetensors", "epochs/epoch-1/trainable.safetensors",
                "epochs/epoch-2/trainable.safetensors"):
        a, b = load_file(tmp_path / "whole" / sub), load_file(tmp_path / "cut" / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    opt_a = torch.load(tmp_path / "whole/epochs/epoch-2/optimizer.pt", weights_only=True)
    opt_b = torch.load(tmp_path / "cut/epochs/epoch-2/optimizer.pt", weights_only=True)
    assert all(torch.equal(opt_a["state"][i]["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"])
               for i in opt_a["state"])
    state = json.loads((tmp_path / "whole/epochs/epoch-1/state.json").read_text())
    assert len(state["trainable_params"]) == len(opt_a["state"])
    assert whole["per_epoch"][0]["checkpoint"] == "epochs/epoch-1"


class _Payload:
    """A pickled object that runs code when unpickled (here: creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("victim", ["optimizer.pt", "rng-0.pt"])
def test_a_crafted_checkpoint_file_is_refused(tiny_model_dir, examples, tmp_path, victim):
    """Checkpoints may come from another machine: a .pt file that would run code when
    unpickled stops the resume with an error, and the code does not run."""
    import pickle

    cfg = train_cfg(epochs=2, batch_size=2, grad_accum=1, checkpoint_every=3)

    def stop_at_4(entry: dict) -> None:   # after the checkpoint of step 3
        if entry["step"] == 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, tiny_model_dir, examples, tmp_path / "run", seed=0, callback=stop_at_4)
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    marker = tmp_path / "the-payload-ran"
    torch.save(_Payload(marker), checkpoint / victim)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train(cfg, tiny_model_dir, examples, tmp_path / "run", seed=0)
    assert not marker.exists()


def test_two_processes_write_byte_identical_model_dirs(tiny_model_dir, examples,
                                                       prepared_smoke, tmp_path):
    """The same training in two processes with different hash seeds writes the same bytes
    in every file of its model directory (so the same DVC hash): peft lists an adapter's
    `target_modules` from a set, whose order follows the process's hash seed."""
    (tmp_path / "pool").symlink_to(prepared_smoke / "pool")
    write_jsonl(tmp_path / "subsets" / "four.jsonl", [{"id": e["id"]} for e in examples[:4]])
    args = ["profile=smoke", f"model.dir={tiny_model_dir}", f"paths.data_dir={tmp_path}",
            "train.subset=four", "train.batch_size=2", "train.epochs=1",
            "train.precision=fp32", "hydra.output_subdir=null", "tracking=disabled"]
    dirs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        subprocess.run([sys.executable, "-m", "naitbench.train", *args,
                        f"hydra.run.dir={tmp_path}/hydra{seed}"], env=env, check=True,
                       capture_output=True)
        model = tmp_path / "runs" / "four" / "seed0" / MODEL_SUBDIR
        dirs.append(tmp_path / f"model-{seed}")
        model.rename(dirs[-1])
    files = [sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file()) for d in dirs]
    assert files[0] == files[1] and Path("adapter_config.json") in files[0]
    assert [f for f in files[0] if (dirs[0] / f).read_bytes() != (dirs[1] / f).read_bytes()] \
        == []
    config = json.loads((dirs[0] / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])


def test_loss_on_response_rows_equals_full_logits_loss(tiny_model_dir, tokenizer, examples):
    """The LM head on the labelled positions only gives the full-logits formula's loss."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    encoded, _ = encode_all(tokenizer, examples[:4], max_length=256)
    batch = collate_with_targets(encoded, pad_id=tokenizer.pad_token_id)
    assert batch["target_index"].numel() < batch["labels"][:, 1:].numel()   # prompts + padding
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(
        full[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        got = ResponseLoss(model)(**batch)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_sparse_logging_keeps_every_step_in_the_epoch_summary(tiny_model_dir, examples,
                                                              tmp_path):
    # 4 steps per epoch, 2 epochs; an entry every 3 steps and at each epoch's end; a
    # checkpoint at step 2 (inside a log window), interrupted at step 3, then resumed.
    cfg = train_cfg(epochs=2, batch_size=2, grad_accum=1, checkpoint_every=2)
    every = train({**cfg, "log_every": 1}, tiny_model_dir, examples, tmp_path / "every", seed=0)
    sparse = train({**cfg, "log_every": 3}, tiny_model_dir, examples, tmp_path / "sparse",
                   seed=0)
    losses = [e["loss"] for e in every["loss_curve"]]
    assert [e["step"] for e in sparse["loss_curve"]] == [3, 4, 6, 8]
    assert [e["loss"] for e in sparse["loss_curve"]] == pytest.approx(
        [sum(losses[0:3]) / 3, losses[3], sum(losses[4:6]) / 2, sum(losses[6:8]) / 2])
    assert sparse["per_epoch"] == every["per_epoch"]
    assert sparse["final_loss"] == losses[-1] and sparse["tokens"] == every["tokens"]

    def stop_at_3(entry: dict) -> None:
        if entry["step"] == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train({**cfg, "log_every": 3}, tiny_model_dir, examples, tmp_path / "cut", seed=0,
              callback=stop_at_3)
    resumed = train({**cfg, "log_every": 3}, tiny_model_dir, examples, tmp_path / "cut",
                    seed=0)
    assert resumed["resumed_from_step"] == 2
    assert resumed["loss_curve"] == sparse["loss_curve"]
    assert resumed["per_epoch"] == sparse["per_epoch"]


def test_nan_loss_stops_training(tiny_model_dir, examples, tmp_path):
    cfg = train_cfg(method="full", lora=None, lr=1e30, max_grad_norm=None, batch_size=2,
                    epochs=4)
    with pytest.raises(TrainingDiverged, match="loss is nan at step"):
        train(cfg, tiny_model_dir, examples, tmp_path / "run", seed=0)
    assert not (tmp_path / "run" / MODEL_SUBDIR).exists()


def test_two_processes_match_one_with_accumulation(tiny_model_dir, examples, prepared_smoke,
                                                   tmp_path):
    """`accelerate launch` with 2 CPU processes x 1 micro-batch per step gives the loss curve
    of 1 process x 2 micro-batches (the same global batch)."""
    (tmp_path / "pool").symlink_to(prepared_smoke / "pool")
    write_jsonl(tmp_path / "subsets" / "eight.jsonl", [{"id": e["id"]} for e in examples])
    args = ["profile=smoke", f"model.dir={tiny_model_dir}", f"paths.data_dir={tmp_path}",
            "train.subset=eight", "train.batch_size=2", "train.lora.dropout=0.0",
            "train.epochs=2", "train.precision=fp32", f"hydra.run.dir={tmp_path}/hydra",
            "hydra.output_subdir=null", "tracking=disabled"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                    "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no", "-m", "naitbench.train", *args,
                    "train.grad_accum=1"], env=env, check=True, capture_output=True)
    metrics_file = tmp_path / "runs" / "eight" / "seed0" / "train_metrics.json"
    two = json.loads(metrics_file.read_text())
    one = train(train_cfg(batch_size=2, grad_accum=2, epochs=2,
                          lora={**train_cfg()["lora"], "dropout": 0.0}),
                tiny_model_dir, examples, tmp_path / "one", seed=0)
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert [e["tokens"] for e in two["loss_curve"]] == [e["tokens"] for e in one["loss_curve"]]
    assert [e["loss"] for e in two["loss_curve"]] == pytest.approx(
        [e["loss"] for e in one["loss_curve"]], rel=1e-5)
