"""Capture finds what it hooks by architecture: tiny random models of four architectures
(Llama, Qwen2, GPT-NeoX, GPT-2), built from configs, record every site with the right shapes
and the block outputs the model itself reports; a model without a part is refused by name."""

from __future__ import annotations

import pytest
import torch

from naitbench.config import ConfigError
from naitbench.features.capture import capture_batch, parse_specs
from naitbench.models.anatomy import anatomy

HIDDEN, INTER, LAYERS, VOCAB = 32, 64, 3, 120


def tiny(kind: str):
    import transformers as tf

    common = {"vocab_size": VOCAB, "num_attention_heads": 4}
    configs = {
        "llama": tf.LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER,
                                num_hidden_layers=LAYERS, **common),
        "qwen2": tf.Qwen2Config(hidden_size=HIDDEN, intermediate_size=INTER,
                                num_hidden_layers=LAYERS, num_key_value_heads=2, **common),
        "gpt_neox": tf.GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=INTER,
                                     num_hidden_layers=LAYERS, **common),
        "gpt2": tf.GPT2Config(n_embd=HIDDEN, n_inner=INTER, n_layer=LAYERS, n_head=4,
                              vocab_size=VOCAB, bos_token_id=0, eos_token_id=0),
    }
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(configs[kind]).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt_neox", "gpt2"])
def test_every_site_is_found_and_recorded(kind):
    model = tiny(kind)
    ids = torch.randint(1, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    response = mask.clone()
    response[:, :3] = 0
    specs = parse_specs(["mlp.mean", "residual.last", "final.weighted"])
    out = capture_batch(model, ids, mask, response, specs)
    assert out["mlp.mean"].shape == (2, LAYERS, INTER)
    assert out["residual.last"].shape == (2, LAYERS, HIDDEN)
    assert out["final.weighted"].shape == (2, 1, HIDDEN)
    with torch.no_grad():   # the blocks' outputs are what the model reports as hidden states
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True
                       ).hidden_states
    last = torch.tensor([6, 4])
    for layer in range(LAYERS - 1):   # the model's last entry is after the final norm
        torch.testing.assert_close(out["residual.last"][:, layer],
                                   hidden[layer + 1][torch.arange(2), last], rtol=1e-4,
                                   atol=1e-5)


def test_a_model_without_a_part_is_refused_with_what_was_looked_for():
    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    assert anatomy(Body(), ["residual"]).names == {"blocks": "layers"}
    with pytest.raises(ConfigError, match=r"no mlp outputs found for the 'mlp' features "
                                          r"\(looked for mlp\.down_proj, mlp\.dense_4h_to_h"):
        anatomy(Body(), ["mlp"])
    with pytest.raises(ConfigError, match=r"no final norm found .* drop the 'final\.\*' specs"):
        anatomy(Body(), ["final"])


def test_lora_targets_are_checked_against_the_architecture(tmp_path):
    from naitbench.train.loop import _build_model

    tiny("gpt_neox").save_pretrained(tmp_path / "neox")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}   # Llama's names
    with pytest.raises(ConfigError, match=r"none is a layer of this gpt_neox model \(its "
                                          r"linear layers: \[.*'query_key_value'.*'all-linear'"):
        _build_model({"method": "lora", "lora": lora}, tmp_path / "neox")
    model = _build_model({"method": "lora", "lora": {**lora, "target_modules": "all-linear"}},
                         tmp_path / "neox")
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert any("query_key_value" in n for n in trained)
