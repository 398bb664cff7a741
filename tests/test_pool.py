"""The candidate pool: stable ids, de-duplication, templating, token counts, subsampling,
the hub loading path and the prepare stage's report."""

from __future__ import annotations

import hashlib
import json

import pytest

from naitbench.data.normalise import normalise_text, record_id, strip_calculator_annotations
from naitbench.data.pool import build_pool, subsample
from naitbench.data.records import BadRecordLog, DataError
from naitbench.data.sources import load_hub
from naitbench.data.template import format_prompt
from naitbench.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _spec(path, **extra):
    return {"source": "local", "local_path": str(path), "size": None, "seed": 0,
            "template": "alpaca", "length_policy": "drop", "max_length": 1024, **extra}


def test_record_id_is_a_content_hash_independent_of_the_machine():
    expected = hashlib.sha256(b"a\x1fb\x1fc\x1f").hexdigest()[:16]
    assert record_id("a", "b", "c") == expected
    assert record_id("ab", "", "c") != record_id("a", "b", "c")


def test_normalisation_keeps_code_indentation_and_unifies_newlines():
    assert normalise_text("\r\n    return x  \r\n\n") == "    return x"
    assert normalise_text("Cafe\u0301") == "Caf\u00e9"
    assert normalise_text(" \n \n") == ""


def test_calculator_annotations_are_removed():
    assert strip_calculator_annotations("16 - 3 = <<16-3=13>>13 eggs") == "16 - 3 = 13 eggs"


def test_pool_ids_dedup_template_and_token_counts(tmp_path, tokenizer):
    rows = [{"instruction": "Add.", "input": "2 and 3", "output": "5"},
            # the same sample once normalised:
            {"instruction": "Add. ", "input": "2 and 3", "output": "5\r\n"},
            {"instruction": "Greet.", "output": "Hello"}]
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(rows))
    pool, counts = build_pool(_spec(path), tokenizer, on_bad="error", log=BadRecordLog(),
                              max_chars=1000)
    assert counts == {"read": 3, "duplicates_removed": 1, "after_dedup": 2, "sampled": 2,
                      "length_policy": {"policy": "drop", "max_length": 1024, "no_room": 0,
                                        "dropped": 0, "prompt_cut": 0, "dropped_ids": []},
                      "kept": 2}
    first = pool[0]
    assert first["id"] == record_id("Add.", "2 and 3", "5")
    assert first["prompt"] == format_prompt("Add.", "2 and 3", "alpaca")
    assert "### Input:\n2 and 3" in first["prompt"]
    assert "### Input" not in pool[1]["prompt"]
    assert first["n_response_tokens"] == len(tokenizer("5", add_special_tokens=False)["input_ids"])
    assert first["n_prompt_tokens"] > 20


def test_subsample_is_seeded_and_keeps_source_order():
    items = [{"i": i} for i in range(100)]
    a, b, c = subsample(items, 10, 1), subsample(items, 10, 1), subsample(items, 10, 2)
    assert a == b and a != c
    assert [x["i"] for x in a] == sorted(x["i"] for x in a)
    assert subsample(items, None, 0) == items
    with pytest.raises(ValueError, match="positive"):
        subsample(items, 0, 0)


def test_hub_path_validates_rows_like_local_lines(tmp_path):
    # The real datasets.load_dataset code path, on a local file through its json builder.
    path = tmp_path / "rows.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "", "output": "b"}\n')
    hub = {"path": "json", "name": None, "split": "train", "data_files": str(path)}
    from naitbench.data.pool import ALPACA_RULES

    with pytest.raises(DataError, match=r"row 1.*'instruction': empty"):
        load_hub(hub, ALPACA_RULES, on_bad="error", log=BadRecordLog(), max_chars=100)
    log = BadRecordLog()
    rows = load_hub(hub, ALPACA_RULES, on_bad="skip", log=log, max_chars=100)
    assert len(rows) == 1 and log.summary()["skipped"] == 1


def test_prepare_skip_mode_writes_a_report_naming_each_skipped_record(tmp_path, smoke_cfg):
    from naitbench.config import compose
    from naitbench.data.prepare import prepare

    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 1, "output": "b"}\n'
                   '{"instruction": "c", "output": "d"}\n')
    overrides = ["profile=smoke", f"paths.data_dir={tmp_path / 'out'}",
                 f"model.dir={smoke_cfg.model.dir}", f"paths.data_root={smoke_cfg.paths.data_root}",
                 f"pool.local_path={bad}", "data.on_bad_record=skip"]
    report = prepare(compose(overrides))
    assert report["pool"]["kept"] == 2
    assert report["bad_records"]["records"] == [
        {"file": str(bad), "line": 2, "field": "instruction",
         "reason": "wrong type: expected str, got int"}]
    written = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert written["bad_records"]["skipped"] == 1
    with pytest.raises(DataError, match=":2: field 'instruction'"):
        prepare(compose([*overrides[:-1], "data.on_bad_record=error"]))


def test_prepare_is_deterministic_byte_for_byte(tmp_path, smoke_cfg, prepared_smoke):
    from naitbench.config import compose
    from naitbench.data.prepare import prepare

    again = tmp_path / "again"
    prepare(compose(["profile=smoke", f"paths.data_dir={again}", f"model.dir={smoke_cfg.model.dir}",
                     f"paths.data_root={smoke_cfg.paths.data_root}"]))
    for rel in ["pool/pool.jsonl", "targets/code/indomain.jsonl", "targets/math/heldout.jsonl",
                "prepare_report.json"]:
        assert (again / rel).read_bytes() == (prepared_smoke / rel).read_bytes(), rel
