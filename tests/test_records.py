"""Raw-record reading: every bad-input case names file, line and field, or is skipped and
counted in skip mode; good records keep their line numbers."""

from __future__ import annotations

import gzip
import json

import pytest

from naitbench.data.pool import ALPACA_RULES
from naitbench.data.records import BadRecordLog, DataError, FieldRule, iter_raw, read_records

GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi!"}


def _jsonl(tmp_path, lines: list[bytes], name: str = "pool.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _line(record) -> bytes:
    return json.dumps(record).encode()


BAD_CASES = {
    "malformed": (b'{"instruction": "x", "output": ', "<record>", "malformed JSON"),
    "missing": (_line({"instruction": "x"}), "output", "missing"),
    "empty": (_line({"instruction": "  ", "output": "y"}), "instruction", "empty"),
    "wrong_type": (_line({"instruction": 3, "output": "y"}), "instruction", "wrong type"),
    "bool_type": (_line({"instruction": "x", "output": True}), "output", "wrong type"),
    "not_object": (b'["instruction", "output"]', "<record>", "wrong type"),
    "non_utf8": (b'{"instruction": "caf\xe9", "output": "y"}', "instruction", "not valid UTF-8"),
    "absurd_length": (_line({"instruction": "x" * 500, "output": "y"}), "instruction",
                      "absurd length"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_error_names_file_line_field(tmp_path, case):
    raw, field, reason = BAD_CASES[case]
    path = _jsonl(tmp_path, [_line(GOOD), _line(GOOD), raw])
    with pytest.raises(DataError) as info:
        read_records(path, ALPACA_RULES, on_bad="error", log=BadRecordLog(), max_chars=100)
    error = info.value
    assert (error.file, error.line, error.field) == (str(path), 3, field)
    assert error.reason.startswith(reason)
    assert f"{path}:3: field '{field}'" in str(error)


def test_skip_mode_counts_every_bad_record_and_keeps_the_good(tmp_path):
    raws = [raw for raw, _, _ in BAD_CASES.values()]
    path = _jsonl(tmp_path, [_line(GOOD), *raws, _line({**GOOD, "output": "Hello!"})])
    log = BadRecordLog()
    good = read_records(path, ALPACA_RULES, on_bad="skip", log=log, max_chars=100)
    assert [line for line, _ in good] == [1, len(raws) + 2]
    summary = log.summary()
    assert summary["skipped"] == len(BAD_CASES)
    assert sum(summary["by_reason"].values()) == len(BAD_CASES)
    assert {(e["line"], e["field"]) for e in summary["records"]} == {
        (i + 2, field) for i, (_, field, _) in enumerate(BAD_CASES.values())}


def test_json_array_records_keep_their_line_numbers(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c",\n'
                    '   "output": ""}\n]\n')
    with pytest.raises(DataError) as info:
        read_records(path, ALPACA_RULES, on_bad="error", log=BadRecordLog(), max_chars=100)
    assert (info.value.line, info.value.field) == (4, "output")


def test_records_of_a_one_line_json_array_are_named_by_index(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},'
                    ' {"instruction": "", "output": "f"}]')
    with pytest.raises(DataError, match=r"pool\.json:record 2: field 'instruction'") as info:
        read_records(path, ALPACA_RULES, on_bad="error", log=BadRecordLog(), max_chars=100)
    assert info.value.line == "record 2"
    mixed = tmp_path / "mixed.json"   # two records on line 2, the third on its own line
    mixed.write_text('[\n{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},'
                     '\n{"instruction": "e", "output": ""}\n]')
    with pytest.raises(DataError) as info:
        read_records(mixed, ALPACA_RULES, on_bad="error", log=BadRecordLog(), max_chars=100)
    assert (info.value.line, info.value.field) == (3, "output")
    assert [label for label, _ in iter_raw(mixed)] == ["record 0", "record 1", 3]


def test_malformed_json_array_is_fatal_even_in_skip_mode(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": \n]\n')
    with pytest.raises(DataError, match="malformed JSON") as info:
        read_records(path, ALPACA_RULES, on_bad="skip", log=BadRecordLog(), max_chars=100)
    assert info.value.line == 4


def test_truncated_json_array_is_an_error(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}')
    with pytest.raises(DataError, match="expected ',' or ']'"):
        list(iter_raw(path))


def test_gzip_jsonl_and_csv_are_read(tmp_path):
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(_line(GOOD) + b"\n"))
    assert [r for _, r in iter_raw(gz)] == [GOOD]
    csv_path = tmp_path / "x.csv"
    csv_path.write_text('question,answer\n"two\nlines",1\nq2,2\n')
    assert [(line, r["answer"]) for line, r in iter_raw(csv_path)] == [(3, "1"), (4, "2")]


def test_missing_file_and_unknown_type_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="input file not found"):
        list(iter_raw(tmp_path / "nope.jsonl"))
    other = tmp_path / "x.parquet"
    other.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unsupported file type"):
        list(iter_raw(other))


def test_on_bad_record_must_be_known(tmp_path):
    path = _jsonl(tmp_path, [_line(GOOD)])
    with pytest.raises(ValueError, match="on_bad_record"):
        read_records(path, ALPACA_RULES, on_bad="ignore", log=BadRecordLog(), max_chars=10)


def _array(records: list[dict]) -> str:
    return "[\n" + ",\n".join(json.dumps(r, indent=1) for r in records) + "\n]"


def test_a_json_array_cut_anywhere_yields_exactly_its_whole_records(tmp_path):
    records = [{"id": f"r{i}", "text": f"value {i} \\\" with an escape"} for i in range(3)]
    text = _array(records)
    ends = [text.index(json.dumps(r, indent=1)) + len(json.dumps(r, indent=1)) for r in records]
    path = tmp_path / "cut.json"
    for cut in range(1, len(text) - 1):  # every prefix short of the closing bracket
        path.write_text(text[:cut])
        log = BadRecordLog()
        got = read_records(path, {"id": FieldRule()}, on_bad="error", log=log, max_chars=100,
                           cut_off_ok=True)
        whole = sum(end <= cut for end in ends)
        assert [r for _, r in got] == records[:whole], cut
        assert [(c["file"], c["records_recovered"]) for c in log.cut_off] == [(str(path), whole)]
    second = text.index('{', ends[0])  # cut inside the second record: the cut names its line
    path.write_text(text[:second + 5])
    log = BadRecordLog()
    read_records(path, {"id": FieldRule()}, on_bad="error", log=log, max_chars=100,
                 cut_off_ok=True)
    assert log.cut_off[0]["line"] == text[:second].count("\n") + 1


def test_cut_off_mode_still_stops_at_a_malformed_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": "a"},\n {"id": tru},\n {"id": "c"}]')
    with pytest.raises(DataError, match="malformed JSON") as info:
        list(iter_raw(path, cut_off_ok=True))
    assert info.value.line == 2
    path.write_text('[{"id": "a"} {"id": "b"}]')
    with pytest.raises(DataError, match="expected ',' or ']'"):
        list(iter_raw(path, cut_off_ok=True))
