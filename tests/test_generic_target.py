"""A target of the user's own (kind generic): files in JSONL, JSON or CSV or a HF dataset,
keys renamed by `fields`, held-out items from their own file or drawn from the in-domain one,
answers for exact match, and every bad input named by file, line and field."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from naitbench.cli import EXIT_USER_ERROR, reported_errors
from naitbench.config import ConfigError, compose
from naitbench.data.records import BadRecordLog, DataError
from naitbench.data.targets import DisjointnessError, build_target, question_key
from naitbench.evaluate.runner import EvalConfigError, generic_task, load_task_config
from naitbench.evaluate.tasks import utils
from naitbench.io import write_jsonl

#: a capability the suite does not ship: unit conversions with a final "Answer: <n>" line
ITEMS = [(f"Convert {n} km to metres.", f"{n} km is {n * 1000} metres.\nAnswer: {n * 1000}")
         for n in range(1, 31)]


def rows(items, question="question", answer="solution", **extra):
    return [{question: q, answer: a, **extra} for q, a in items]


def spec(indomain: Path, heldout: Path | None = None, **overrides) -> dict:
    """conf/target/generic.yaml with the test's files and overrides."""
    base = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "target"
                                                 / "generic.yaml"))
    base.update(name="units", local={"indomain": str(indomain),
                                     "heldout": str(heldout) if heldout else None},
                fields={"instruction": "question", "response": "solution"})
    for key, value in overrides.items():
        base[key] = value
    return base


def build(target_spec: dict, on_bad: str = "error", log: BadRecordLog | None = None):
    return build_target("units", target_spec, "alpaca", on_bad=on_bad,
                        log=log if log is not None else BadRecordLog(), max_chars=20000)


def test_two_files_with_renamed_keys_and_a_pattern(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", rows(ITEMS[:20], topic="metric"))
    write_jsonl(tmp_path / "out.jsonl", rows(ITEMS[20:], topic="metric"))
    target = spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", heldout_size=None,
                  answer_pattern=r"Answer:\s*(\d+)",
                  fields={"instruction": "question", "response": "solution",
                          "subtask": "topic"})
    indomain, heldout, counts = build(target)
    assert (len(indomain), len(heldout)) == (20, 10)
    assert counts == {"indomain_read": 20, "heldout_read": 10, "indomain": 20, "heldout": 10}
    first = heldout[0]
    assert first["instruction"] == "Convert 21 km to metres." and first["subtask"] == "metric"
    assert first["prompt"].endswith("### Response:\n") and "Convert 21 km" in first["prompt"]
    assert first["eval"] == {"kind": "generic", "answer": "21000",
                             "answer_pattern": r"Answer:\s*(\d+)"}


def test_one_file_holds_out_whole_questions_by_seed(tmp_path):
    repeated = [*ITEMS, (ITEMS[0][0], "Another wording.\nAnswer: 1000")]   # asked twice
    write_jsonl(tmp_path / "all.jsonl", rows(repeated))
    target = spec(tmp_path / "all.jsonl", heldout_size=10, indomain_size=12)
    indomain, heldout, counts = build(target)
    assert len(heldout) in (10, 11) and len(indomain) == 12
    assert not ({question_key(r) for r in indomain} & {question_key(r) for r in heldout})
    assert counts["indomain_read"] == 31
    again, other = build(target), build({**target, "seed": 1})
    assert [r["id"] for r in again[1]] == [r["id"] for r in heldout]
    assert [r["id"] for r in other[1]] != [r["id"] for r in heldout]


def test_csv_and_a_json_array(tmp_path):
    with (tmp_path / "in.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["question", "solution", "context"])
        writer.writeheader()
        writer.writerows(rows(ITEMS[:10], context="SI units"))
    (tmp_path / "out.json").write_text(json.dumps(rows(ITEMS[10:15]), indent=1))
    target = spec(tmp_path / "in.csv", tmp_path / "out.json", heldout_size=None,
                  fields={"instruction": "question", "response": "solution",
                          "input": "context"})
    indomain, heldout, _ = build(target)
    assert indomain[0]["input"] == "SI units" and heldout[0]["input"] == ""
    assert len(heldout) == 5


def test_answer_column_gives_the_answers(tmp_path):
    write_jsonl(tmp_path / "all.jsonl", [{**r, "gold": i} for i, r in
                                         enumerate(rows(ITEMS))])
    target = spec(tmp_path / "all.jsonl", heldout_size=5,
                  fields={"instruction": "question", "response": "solution", "answer": "gold"})
    _, heldout, _ = build(target)
    assert all(r["eval"]["answer"].isdigit() for r in heldout)
    assert heldout[0]["eval"]["answer_pattern"] is None


def test_hub_dataset_through_datasets(tmp_path):
    write_jsonl(tmp_path / "all.jsonl", rows(ITEMS))
    target = spec(tmp_path / "all.jsonl", heldout_size=5, source="hub",
                  hub={"indomain": {"path": "json", "name": None, "split": "train",
                                    "data_files": str(tmp_path / "all.jsonl")},
                       "heldout": None})
    indomain, heldout, _ = build(target)
    assert (len(indomain), len(heldout)) == (25, 5)


def test_missing_field_named_by_file_line_and_the_users_key(tmp_path):
    lines = rows(ITEMS[:5])
    del lines[3]["solution"]
    write_jsonl(tmp_path / "in.jsonl", lines)
    with pytest.raises(DataError, match=r"in\.jsonl:4: field 'solution': missing"):
        build(spec(tmp_path / "in.jsonl", heldout_size=2))


def test_reference_without_an_answer_is_a_bad_record(tmp_path):
    lines = rows(ITEMS[:8])
    lines[6]["solution"] = "It is many metres."
    write_jsonl(tmp_path / "in.jsonl", rows(ITEMS[8:12]))
    write_jsonl(tmp_path / "out.jsonl", lines)
    target = spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", heldout_size=None,
                  answer_pattern=r"Answer:\s*(\d+)")
    with pytest.raises(DataError, match=r"out\.jsonl:7: field 'solution': no answer: "
                                        r"answer_pattern .* matches nothing"):
        build(target)
    log = BadRecordLog()
    _, heldout, _ = build(target, on_bad="skip", log=log)
    assert len(heldout) == 7 and log.summary()["skipped"] == 1
    assert log.entries[0]["line"] == 7 and log.entries[0]["field"] == "solution"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"answer_pattern": "Answer: (\\d+"}, r"answer_pattern .* is not a regular expression"),
    ({"answer_pattern": "(A)(B)"}, r"has 2 groups"),
    ({"fields": {"question": "q"}}, r"targets\.units\.fields names \['question'\]"),
    ({"heldout_size": None}, r"no held-out file .* heldout_size=None"),
    ({"heldout_size": 40}, r"holds out all 30 distinct questions"),
])
def test_config_mistakes_named(tmp_path, overrides, message):
    write_jsonl(tmp_path / "all.jsonl", rows(ITEMS))
    target = spec(tmp_path / "all.jsonl", **overrides)
    with pytest.raises(ConfigError, match=message):
        build(target)


def test_shared_question_in_two_files_refused(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", rows(ITEMS[:10]))
    write_jsonl(tmp_path / "out.jsonl", rows(ITEMS[9:15]))
    with pytest.raises(DisjointnessError, match="1 held-out items also appear"):
        build(spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", heldout_size=None))
    with pytest.raises(SystemExit) as exit_info, reported_errors():   # two lines, no traceback
        build(spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", heldout_size=None))
    assert exit_info.value.code == EXIT_USER_ERROR


def test_a_target_is_one_yaml_file_or_an_override(tmp_path):
    """`+target@targets.<name>=generic` plus overrides composes a target without Python."""
    write_jsonl(tmp_path / "all.jsonl", rows(ITEMS))
    cfg = compose(["+target@targets.units=generic", "targets.units.name=units",
                   f"targets.units.local.indomain={tmp_path / 'all.jsonl'}",
                   "targets.units.fields.instruction=question",
                   "targets.units.fields.response=solution", "targets.units.heldout_size=10",
                   "data.prepared_targets=[units]", "target=generic", "target.name=units"])
    indomain, heldout, _ = build_target("units", cfg.targets.units, "plain", on_bad="error",
                                        log=BadRecordLog(), max_chars=20000)
    assert (len(indomain), len(heldout)) == (20, 10)


# ---------------------------------------------------------------- its lm-eval tasks
def prepared(tmp_path: Path, answers: bool) -> Path:
    write_jsonl(tmp_path / "all.jsonl", rows(ITEMS))
    pattern = {"answer_pattern": r"Answer:\s*(\d+)"} if answers else {}
    indomain, heldout, _ = build(spec(tmp_path / "all.jsonl", heldout_size=5, **pattern))
    data = tmp_path / "data"
    write_jsonl(data / "targets" / "units" / "indomain.jsonl", indomain)
    write_jsonl(data / "targets" / "units" / "heldout.jsonl", heldout)
    return data


def test_generic_tasks_built_from_the_templates(tmp_path):
    data = prepared(tmp_path, answers=True)
    bpb, em = load_task_config("nb_units_bpb", data), load_task_config("nb_units_em", data)
    assert bpb["task"] == "nb_units_bpb" and em["task"] == "nb_units_em"
    assert bpb["dataset_kwargs"]["data_files"] == {
        "test": str(data / "targets" / "units" / "heldout.jsonl")}
    assert em["dataset_kwargs"]["data_files"]["train"].endswith("units/indomain.jsonl")
    assert bpb["process_results"] is not None and callable(em["process_results"])
    assert generic_task("nb_gsm8k_bpb") is None          # the pack's own task wins
    assert generic_task("nb_units_em") == ("units", "em")


def test_generic_task_errors(tmp_path):
    data = prepared(tmp_path, answers=False)
    with pytest.raises(EvalConfigError, match="has no answers to match"):
        load_task_config("nb_units_em", data)
    with pytest.raises(EvalConfigError, match=r"held-out set .* does not exist"):
        load_task_config("nb_legal_bpb", data)
    with pytest.raises(EvalConfigError, match="unknown task 'units_score'"):
        load_task_config("units_score", data)
    write_jsonl(data / "targets" / "code" / "heldout.jsonl", [{"eval": {"task_id": "x"}}])
    with pytest.raises(EvalConfigError, match="'code' is not of kind generic"):
        load_task_config("nb_code_bpb", data)


@pytest.mark.parametrize(("generation", "correct"), [
    ("4 km is 4000 metres.\nAnswer: 4000", True),
    ("Answer: 4000.\nAnswer: 12", True),      # the first match counts
    ("Answer: 400", False),
    ("It is 4000 metres.", False),            # no answer line: nothing matches
])
def test_generic_exact_match(generation, correct):
    doc = {"eval": {"answer": "4000", "answer_pattern": r"Answer:\s*(\d+)"}}
    assert utils.generic_exact_match_results(doc, [generation]) == {"exact_match": float(correct)}


def test_exact_match_without_a_pattern_reads_the_whole_response():
    doc = {"eval": {"answer": "Paris.", "answer_pattern": None}}
    assert utils.generic_exact_match_results(doc, ["  paris "])["exact_match"] == 1.0
    assert utils.extract_answer(re.compile("x"), "abc") is None
