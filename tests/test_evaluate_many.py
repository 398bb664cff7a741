"""Scoring several models in one process (`evaluate_many`): every model's outputs match
scoring it alone, the base model is loaded once for all its adapters, and the CPU precision
follows eval.dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.evaluate import Row, evaluate, evaluate_many
from naitbench.evaluate.runner import cpu_autocast
from naitbench.io import read_jsonl
from naitbench.train import MODEL_SUBDIR, load_examples, train

TASKS = ["nb_humaneval_bpb", "nb_gsm8k_bpb"]


def eval_cfg(**overrides) -> dict:
    cfg = OmegaConf.to_container(compose(["profile=smoke"]).eval)
    cfg.update(limit=3, batch_size=2, **overrides)
    return cfg


@pytest.fixture(scope="module")
def adapters(prepared_smoke, tiny_model_dir, tmp_path_factory) -> list[Path]:
    """Two LoRA adapters of the tiny model, trained on different records."""
    root = tmp_path_factory.mktemp("adapters")
    cfg = OmegaConf.to_container(compose(["profile=smoke"]).train)
    examples = load_examples(prepared_smoke, "full")
    for seed in (0, 1):
        train({**cfg, "lr": 1e-2, "max_steps": 3}, tiny_model_dir,
              examples[3 * seed:3 * seed + 6], root / f"run{seed}", seed=seed)
    return [root / f"run{seed}" / MODEL_SUBDIR for seed in (0, 1)]


def _items(out: Path) -> dict[tuple, float]:
    return {(r["task"], r["doc_id"]): r["value"] for r in read_jsonl(out / "samples.jsonl")}


def test_many_models_score_as_alone_with_one_model_load(prepared_smoke, tiny_model_dir,
                                                        adapters, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    # an adapter before the base model: taking it off must leave the base model as it was
    specs = [("a0", adapters[0]), ("base", None), ("a1", adapters[1])]
    alone = {name: evaluate(eval_cfg(), tiny_model_dir, tmp_path / "alone" / name,
                            data_dir=prepared_smoke, adapter_dir=adapter, tasks=TASKS)
             for name, adapter in specs}
    loads = []
    real_init = HFLM.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(kwargs.get("pretrained"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "__init__", counting_init)
    rows = [Row(tiny_model_dir, tmp_path / "many" / name, adapter) for name, adapter in specs]
    together = evaluate_many(eval_cfg(), rows, data_dir=prepared_smoke, tasks=TASKS)
    assert loads == [str(tiny_model_dir)]
    assert len({m["nb_humaneval_bpb/bits_per_byte"] for m in together}) == 3  # adapters count
    for (name, _), metrics in zip(specs, together, strict=True):
        assert metrics.keys() == alone[name].keys()
        for key, value in metrics.items():
            assert value == pytest.approx(alone[name][key], abs=1e-6)
        one, many = _items(tmp_path / "alone" / name), _items(tmp_path / "many" / name)
        assert one.keys() == many.keys() and len(one) == 2 * 3
        assert all(many[k] == pytest.approx(one[k], abs=1e-6) for k in one)
        results = json.loads((tmp_path / "many" / name / "results.json").read_text())
        assert results["config"]["model_args"].get("peft") == (
            None if name == "base" else str(dict(specs)[name]))


def test_rows_on_different_models_load_each_once(prepared_smoke, tiny_model_dir, adapters,
                                                 tmp_path, monkeypatch):
    """A fully fine-tuned row (its own model directory) between adapter rows."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    full = tmp_path / "full-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    model.save_pretrained(full)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (full / name).write_bytes((tiny_model_dir / name).read_bytes())
    alone = evaluate(eval_cfg(), full, tmp_path / "alone", data_dir=prepared_smoke,
                     tasks=TASKS[:1])
    loads = []
    real_init = HFLM.__init__
    monkeypatch.setattr(HFLM, "__init__", lambda self, *a, **k: (
        loads.append(k.get("pretrained")), real_init(self, *a, **k))[1])
    rows = [Row(tiny_model_dir, tmp_path / "a0", adapters[0]), Row(full, tmp_path / "full"),
            Row(tiny_model_dir, tmp_path / "a1", adapters[1])]
    metrics = evaluate_many(eval_cfg(), rows, data_dir=prepared_smoke, tasks=TASKS[:1])
    assert sorted(loads) == sorted([str(tiny_model_dir), str(full)])
    assert metrics[1] == pytest.approx(alone, abs=1e-6)


def test_cpu_precision_follows_eval_dtype():
    assert cpu_autocast("float32") is None
    assert cpu_autocast("bfloat16") is torch.bfloat16
    # auto stays fp32 on every CPU: bf16 failed the bits-per-byte bound (BENCHMARKS.md)
    assert cpu_autocast("auto") is None
    with pytest.raises(ValueError, match="cannot score on the CPU"):
        cpu_autocast("float16")


def test_forced_bf16_is_recorded_and_kept_apart(prepared_smoke, tiny_model_dir, tmp_path):
    """bf16 autocast scores close to fp32 but not identically, says so in results.json, and
    never reuses a task kept from an fp32 run."""
    kept = tmp_path / "kept"
    fp32 = evaluate(eval_cfg(dtype="float32"), tiny_model_dir, tmp_path / "fp32",
                    data_dir=prepared_smoke, tasks=TASKS[:1])
    kept.mkdir()
    bf16 = evaluate(eval_cfg(dtype="bfloat16"), tiny_model_dir, tmp_path / "bf16",
                    data_dir=prepared_smoke, tasks=TASKS[:1], resume_dir=kept)
    key = "nb_humaneval_bpb/bits_per_byte"
    assert bf16[key] != fp32[key]
    assert bf16[key] == pytest.approx(fp32[key], rel=0.05)
    args = json.loads((tmp_path / "bf16" / "results.json").read_text())["config"]["model_args"]
    assert args["mixed_precision_dtype"] == "bfloat16" and args["softmax_dtype"] == "float32"
    args = json.loads((tmp_path / "fp32" / "results.json").read_text())["config"]["model_args"]
    assert "mixed_precision_dtype" not in args
