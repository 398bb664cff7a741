"""Prompt formats: the fixed texts and the model's own chat template (one user turn, the
assistant's turn opened, one BOS once encoded), used alike for pool and targets; and an
Alpaca-shaped pool whose keys are named otherwise, read through `pool.fields`."""

from __future__ import annotations

import json

import pytest

from naitbench.config import ConfigError
from naitbench.data.pool import build_pool
from naitbench.data.records import BadRecordLog, DataError
from naitbench.data.targets import build_target
from naitbench.data.template import PromptFormat, format_prompt
from naitbench.io import write_jsonl
from naitbench.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_chat_is_the_tokenizers_template(tokenizer):
    prompt = PromptFormat("chat", tokenizer)("Add the numbers.", "2 and 3")
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}], tokenize=False,
        add_generation_prompt=True)
    adds_bos = tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    assert prompt == (expected.removeprefix(tokenizer.bos_token) if adds_bos else expected)
    assert "Add the numbers." in prompt and "### Instruction" not in prompt
    ids = tokenizer(prompt + "5")["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None:   # one BOS at the start, the template's or the tokenizer's, not both
        assert ids[:2] != [bos, bos]
        # SmolLM2's BOS is also its turn marker: the template's own markers, none added
        assert ids.count(bos) == tokenizer(expected + "5",
                                           add_special_tokens=False)["input_ids"].count(bos)


def test_fixed_formats_need_no_tokenizer():
    assert PromptFormat("alpaca")("Greet.") == format_prompt("Greet.", "", "alpaca")
    assert PromptFormat("plain")("Greet.", "Bob") == "Greet.\n\nBob\n\n"


def test_unusable_formats_named(tokenizer):
    with pytest.raises(ConfigError, match=r"pool.template='chatml'; choose one of"):
        PromptFormat("chatml")
    with pytest.raises(ConfigError, match="needs the model's tokenizer"):
        PromptFormat("chat")
    tokenizer.chat_template, kept = None, tokenizer.chat_template
    try:
        with pytest.raises(ConfigError, match=r"has no chat template; use pool\.template="):
            PromptFormat("chat", tokenizer)
    finally:
        tokenizer.chat_template = kept


def test_pool_and_targets_share_the_chat_format(tmp_path, tokenizer):
    write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "Say hi.", "output": "Hi."}])
    spec = {"source": "local", "local_path": str(tmp_path / "pool.jsonl"), "size": None,
            "seed": 0, "template": "chat", "length_policy": "drop", "max_length": 256}
    pool, _ = build_pool(spec, tokenizer, on_bad="error", log=BadRecordLog(), max_chars=1000)
    write_jsonl(tmp_path / "t.jsonl", [{"instruction": f"Say {w}.", "response": w}
                                       for w in ("hi", "yo", "hey", "ho")])
    target = {"kind": "generic", "source": "local", "seed": 0, "indomain_size": None,
              "heldout_size": 2, "local": {"indomain": str(tmp_path / "t.jsonl")}}
    chat = PromptFormat("chat", tokenizer)
    indomain, _, _ = build_target("greet", target, chat, on_bad="error", log=BadRecordLog(),
                                  max_chars=1000)
    assert pool[0]["prompt"] == chat("Say hi.")
    assert indomain[0]["prompt"] == chat(indomain[0]["instruction"])


def test_alpaca_pool_with_renamed_keys(tmp_path, tokenizer):
    rows = [{"question": "Add.", "context": "2 and 3", "answer": "5"},
            {"question": "Greet.", "answer": ""}]
    (tmp_path / "pool.json").write_text(json.dumps(rows, indent=1))
    spec = {"source": "local", "local_path": str(tmp_path / "pool.json"), "size": None,
            "seed": 0, "template": "alpaca", "length_policy": "drop", "max_length": 1024,
            "fields": {"instruction": "question", "input": "context", "output": "answer"}}
    with pytest.raises(DataError, match=r"pool\.json:7: field 'answer': empty"):
        build_pool(spec, tokenizer, on_bad="error", log=BadRecordLog(), max_chars=1000)
    pool, _ = build_pool(spec, tokenizer, on_bad="skip", log=BadRecordLog(), max_chars=1000)
    assert [(r["instruction"], r["input"], r["output"]) for r in pool] == [("Add.", "2 and 3",
                                                                            "5")]
    with pytest.raises(ConfigError, match=r"pool.fields renames \['question'\]"):
        build_pool({**spec, "fields": {"question": "q"}}, tokenizer, on_bad="skip",
                   log=BadRecordLog(), max_chars=1000)
