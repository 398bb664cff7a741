"""Target sets from the local mirror: in-domain and held-out splits, disjointness checked."""

from __future__ import annotations

import json

import pytest

from naitbench.config import compose
from naitbench.data.records import BadRecordLog, DataError
from naitbench.data.targets import (
    DisjointnessError,
    build_target,
    check_disjoint,
    parse_cot_prompt,
    question_key,
)


@pytest.fixture(scope="module")
def catalogue(data_root):
    return compose([f"paths.data_root={data_root}"]).targets


def _build(spec, **sizes):
    spec = {**spec, **sizes}
    return build_target(spec["name"], spec, "alpaca", on_bad="error", log=BadRecordLog(),
                        max_chars=20000)


def _disjoint_by_question(indomain, heldout):
    return not ({question_key(r) for r in indomain} & {question_key(r) for r in heldout})


def test_math_from_gsm8k_train_and_test(catalogue):
    indomain, heldout, counts = _build(catalogue.math, indomain_size=20, heldout_size=30)
    assert (len(indomain), len(heldout)) == (20, 30)
    assert counts["train_read"] == 7473 and counts["test_read"] == 1319
    item = heldout[0]["eval"]
    assert "<<" in item["answer"] and "<<" not in item["reference"]
    assert item["reference"].endswith(f"The answer is {item['final_answer']}.")
    assert _disjoint_by_question(indomain, heldout)


def test_code_split_is_fixed_and_keeps_indentation(catalogue):
    indomain, heldout, _ = _build(catalogue.code)
    assert (len(indomain), len(heldout)) == (60, 104)
    assert indomain[0]["eval"]["task_id"] == "HumanEval/0"
    assert heldout[0]["eval"]["task_id"] == "HumanEval/60"
    assert indomain[0]["response"].startswith("    ")
    assert _disjoint_by_question(indomain, heldout)


def test_knowledge_from_mmlu_dev_and_test(catalogue):
    indomain, heldout, counts = _build(catalogue.knowledge, indomain_size=10, heldout_size=12)
    assert counts["dev_read"] == 285 and counts["test_read"] == 14042
    for record in indomain + heldout:
        assert len(record["eval"]["choices"]) == 4 and record["eval"]["answer"] in range(4)
    assert _disjoint_by_question(indomain, heldout)


def test_reasoning_exemplars_in_domain_examples_held_out(catalogue):
    spec = {**catalogue.reasoning, "tasks": ["date_understanding", "boolean_expressions"]}
    indomain, heldout, _ = _build(spec, heldout_per_task=4)
    assert (len(indomain), len(heldout)) == (6, 8)
    assert indomain[0]["response"].startswith("Let's think step by step.")
    date = [r for r in heldout if r["subtask"] == "date_understanding"]
    assert all(r["eval"]["target"] in r["eval"]["choices"] for r in date)
    assert _disjoint_by_question(indomain, heldout)


def test_cot_prompt_parsing():
    text = "canary\n-----\nTask.\n\nQ: one?\nA: Let's think. So the answer is (A).\n\n" \
           "Q: two\nlines?\nA: So the answer is B."
    assert parse_cot_prompt(text) == [("one?", "Let's think. So the answer is (A)."),
                                      ("two\nlines?", "So the answer is B.")]


def test_overlap_between_splits_is_detected(catalogue):
    indomain, heldout, _ = _build(catalogue.math, indomain_size=5, heldout_size=5)
    with pytest.raises(DisjointnessError, match="1 held-out items"):
        check_disjoint("math", indomain, [*heldout, indomain[2]])


def test_multilingual_without_a_source_says_how_to_configure_one(catalogue):
    with pytest.raises(ValueError, match="no data source configured"):
        _build(catalogue.multilingual)


def test_multilingual_from_local_jsonl(tmp_path, catalogue):
    rows = [{"id": f"swahili-{i}", "question": f"q{i}?", "context": f"context {i}",
             "answers": {"text": [f"a{i}"], "answer_start": [0]}} for i in range(6)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({**r, "question": f"{split} {r['question']}"}) for r in rows))
    spec = {**catalogue.multilingual, "source": "local",
            "local": {"train": str(tmp_path / "train.jsonl"), "dev": str(tmp_path / "dev.jsonl")}}
    indomain, heldout, _ = _build(spec, indomain_size=3, heldout_size=4)
    assert (len(indomain), len(heldout)) == (3, 4)
    assert heldout[0]["subtask"] == "swahili" and heldout[0]["eval"]["answers"]


def test_bad_target_file_names_file_line_field(tmp_path, catalogue):
    train = tmp_path / "train.jsonl"
    train.write_text('{"question": "q", "answer": "a #### 1"}\n{"question": "q2"}\n')
    spec = {**catalogue.math, "local": {"train": str(train), "test": str(train)}}
    with pytest.raises(DataError, match=r"train.jsonl:2: field 'answer': missing"):
        _build(spec)
