"""Any HF causal LM as the base model: tiny random models of three architectures, built from
configs and saved as model directories (Llama, Qwen2, and GPT-NeoX, whose modules are named
otherwise), each through the whole pipeline on the smoke profile: data prepared, features
captured, NAIT selecting, LoRA training ('all-linear') and lm-eval scoring the adapter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import smoke_overrides

from naitbench.config import compose
from naitbench.data.prepare import prepare
from naitbench.evaluate import evaluate
from naitbench.features.__main__ import extract_all
from naitbench.io import read_jsonl
from naitbench.select.__main__ import select
from naitbench.train import load_examples, run_dir, train
from naitbench.train.loop import MODEL_SUBDIR


def save_tiny(kind: str, tokenizer_dir: Path, out: Path) -> Path:
    """A 2-layer random model of architecture `kind` with the smoke model's tokenizer."""
    import transformers as tf

    tokenizer = tf.AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "num_attention_heads": 4,
           "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    if kind == "qwen2":
        ids["num_key_value_heads"] = 2   # its default (32) assumes the full-size model
    config = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config,
              "gpt_neox": tf.GPTNeoXConfig}[kind](**ids)
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt_neox"])
def test_pipeline_on_architecture(kind, tmp_path, tiny_model_dir, data_root):
    model_dir = save_tiny(kind, tiny_model_dir, tmp_path / kind)
    data_dir = tmp_path / "data"
    cfg = compose([*smoke_overrides(data_dir, model_dir, data_root), "tracking=disabled",
                   "train.lora.target_modules=all-linear", "select.method=nait",
                   "select.name=nait-arch", "eval.limit=3", "eval.tasks=[nb_humaneval_bpb]"])
    prepare(cfg)
    summary = extract_all(cfg)
    assert set(summary) == {"pool", "code", "math"}
    subset = select(cfg)
    kept = [r["id"] for r in read_jsonl(subset)]
    assert 0 < len(kept) <= 5                      # 10% of the smoke pool's 50 records
    out = run_dir(data_dir, "nait-arch", 0)
    metrics = train(cfg.train, model_dir, load_examples(data_dir, "nait-arch"), out, seed=0)
    assert metrics["examples_trained"] == len(kept) and math.isfinite(metrics["final_loss"])
    scores = evaluate(cfg.eval, model_dir, tmp_path / "scores", data_dir=data_dir,
                      adapter_dir=out / MODEL_SUBDIR)
    assert math.isfinite(scores["nb_humaneval_bpb/bits_per_byte"])
    assert scores["nb_humaneval_bpb/bits_per_byte"] > 0
