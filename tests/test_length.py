"""The length policy at preparation: a record whose prompt leaves its response no token within
the training length is dropped (and counted) or has its prompt cut from the left, measured with
the trainer's own encoding, so the trainer gets only records it trains as selected."""

from __future__ import annotations

import pytest

from naitbench.config import ConfigError, compose, validate
from naitbench.data.encoding import encode, response_tokens
from naitbench.data.length import apply_length_policy
from naitbench.data.template import format_prompt
from naitbench.models.load import load_tokenizer

MAX = 64


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _record(tokenizer, rid: str, instruction: str, response: str) -> dict:
    prompt = format_prompt(instruction, "")
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return {"id": rid, "prompt": prompt, "response": response, "n_prompt_tokens": n_prompt}


@pytest.fixture(scope="module")
def records(tokenizer) -> list[dict]:
    """Short, a prompt that leaves a few tokens, prompts that fill the length, one far over."""
    base = len(tokenizer(format_prompt("", ""), add_special_tokens=False)["input_ids"])
    return [_record(tokenizer, "short", "Say hi.", "Hi there."),
            _record(tokenizer, "tight", " ".join(["word"] * (MAX - base - 8)), "ok " * 30),
            _record(tokenizer, "full", " ".join(["word"] * (MAX - base + 2)), "Fine."),
            _record(tokenizer, "long", "lorem ipsum " * 200, "A long answer. " * 10)]


def _room(tokenizer, record) -> int:
    return response_tokens(encode(tokenizer, record["prompt"], record["response"])["labels"], MAX)


def test_drop_leaves_out_exactly_the_records_without_room(tokenizer, records):
    without_room = [r["id"] for r in records if not _room(tokenizer, r)]
    assert without_room == ["full", "long"]
    kept, counts = apply_length_policy(records, tokenizer, "drop", MAX)
    assert [r["id"] for r in kept] == ["short", "tight"] and kept == records[:2]
    assert counts == {"policy": "drop", "max_length": MAX, "no_room": 2, "dropped": 2,
                      "prompt_cut": 0, "dropped_ids": ["full", "long"]}


def test_truncate_prompt_cuts_from_the_left_and_keeps_the_response(tokenizer, records):
    kept, counts = apply_length_policy(records, tokenizer, "truncate_prompt", MAX)
    assert [r["id"] for r in kept] == [r["id"] for r in records]
    assert (counts["no_room"], counts["dropped"], counts["prompt_cut"]) == (2, 0, 2)
    assert kept[:2] == records[:2]
    for before, after in zip(records[2:], kept[2:], strict=True):
        assert before["prompt"].endswith(after["prompt"]) and after["prompt"] != before["prompt"]
        assert after["prompt"].endswith("\n\n### Response:\n")
        assert after["response"] == before["response"]
        assert after["prompt_cut_tokens"] > 0
        assert after["n_prompt_tokens"] == len(
            tokenizer(after["prompt"], add_special_tokens=False)["input_ids"])
        # the response gets min(its length with eos, MAX // 2) tokens, give or take a merge
        whole = len(tokenizer(before["response"], add_special_tokens=False)["input_ids"]) + 1
        assert _room(tokenizer, after) >= min(whole, MAX // 2) - 1


def test_the_pool_length_follows_the_training_length_and_is_checked():
    cfg = compose(["profile=smoke", "train.max_length=300"])
    assert cfg.pool.max_length == 300 and cfg.pool.length_policy == "drop"
    assert compose(["profile=medium"]).pool.max_length == 512
    with pytest.raises(ConfigError, match=r"pool\.max_length=400.*train\.max_length=300"):
        validate(compose(["profile=smoke", "train.max_length=300", "pool.max_length=400"]))
    with pytest.raises(ConfigError, match=r"pool\.length_policy='keep'"):
        validate(compose(["profile=smoke", "pool.length_policy=keep"]))
