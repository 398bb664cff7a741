"""Chat-messages pools (role/content lists, the OpenAI and Tulu shape): the first exchange or
every exchange with its history, renamed keys, bad records named by file, line and field."""

from __future__ import annotations

import json

import pytest

from naitbench.config import ConfigError
from naitbench.data.conversations import conversation_pairs
from naitbench.data.pool import build_pool
from naitbench.data.records import BadRecordLog, DataError
from naitbench.models.load import load_tokenizer


def _chat(*turns, key="messages", role="role", content="content"):
    return {key: [{role: r, content: c} for r, c in turns]}


CHAT = _chat(("system", "Be brief."), ("user", "Name a colour."), ("assistant", "Blue."),
             ("user", "Another?"), ("assistant", "Red."))


def _spec(tmp_path, records, **extra):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"source": "local", "local_path": str(path), "format": "messages", "size": None,
            "seed": 0, "template": "alpaca", "length_policy": "drop", "max_length": 1024,
            **extra}, path


def test_the_first_exchange_skips_a_system_message(tmp_path):
    spec, _ = _spec(tmp_path, [CHAT, _chat(("assistant", "Hi")), _chat()])
    pairs, counts = conversation_pairs(spec, on_bad="error", log=BadRecordLog(), max_chars=100)
    assert [row for _, row in pairs] == [{"instruction": "Name a colour.", "input": "",
                                          "output": "Blue."}]
    assert counts["first_turn_pairs"] == 1
    assert counts["not_a_pair"] == {"first turn from assistant": 1, "no turns": 1}


def test_every_exchange_carries_its_history(tmp_path):
    spec, _ = _spec(tmp_path, [CHAT], turns="every")
    pairs, counts = conversation_pairs(spec, on_bad="error", log=BadRecordLog(), max_chars=100)
    rows = [row for _, row in pairs]
    assert rows[0] == {"instruction": "Name a colour.", "input": "", "output": "Blue."}
    assert rows[1] == {"instruction": "Another?",
                       "input": "User: Name a colour.\n\nAssistant: Blue.", "output": "Red."}
    assert counts["exchange_pairs"] == 2


def test_renamed_keys_and_a_bad_turn_named_by_line_and_field(tmp_path):
    good = _chat(("user", "Q"), ("assistant", "A"), key="dialogue", role="speaker",
                 content="text")
    bad = {"dialogue": [{"speaker": "user", "text": "Q"}, {"speaker": "assistant", "text": 3}]}
    spec, path = _spec(tmp_path, [good, bad],
                       fields={"turns": "dialogue", "role": "speaker", "content": "text"})
    with pytest.raises(DataError) as info:
        conversation_pairs(spec, on_bad="error", log=BadRecordLog(), max_chars=100)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 2,
                                                                    "dialogue[1].text")
    log = BadRecordLog()
    pairs, counts = conversation_pairs(spec, on_bad="skip", log=log, max_chars=100)
    assert len(pairs) == 1 and counts["bad_records"] == 1
    with pytest.raises(ConfigError, match=r"pool.turns='all': use one of \['first', 'every'\]"):
        conversation_pairs({**spec, "turns": "all"}, on_bad="skip", log=log, max_chars=100)
    with pytest.raises(ConfigError, match=r"pool.fields \['speaker'\]"):
        conversation_pairs({**spec, "fields": {"speaker": "x"}}, on_bad="skip", log=log,
                           max_chars=100)


def test_a_messages_pool_builds_templated_records(tmp_path, tiny_model_dir):
    spec, _ = _spec(tmp_path, [CHAT, CHAT], turns="every")
    pool, counts = build_pool(spec, load_tokenizer(tiny_model_dir), on_bad="error",
                              log=BadRecordLog(), max_chars=100)
    assert counts["duplicates_removed"] == 2 and len(pool) == 2
    assert "### Input:\nUser: Name a colour.\n\nAssistant: Blue." in pool[1]["prompt"]
    with pytest.raises(ConfigError, match=r"pool.format='chatml': use one of \['alpaca', "
                                          r"'sharegpt', 'messages'\]"):
        build_pool({**spec, "format": "chatml"}, load_tokenizer(tiny_model_dir),
                   on_bad="error", log=BadRecordLog(), max_chars=100)
