"""ShareGPT conversations as instruction pairs: the first human turn and the gpt answer to it.

A record is `{"id", "conversations": [{"from", "value"}, ...]}`. A record of the wrong shape
(not an object, a missing id, a turn that is not an object, a non-string `from`/`value`,
invalid UTF-8, an absurd length) is a bad record (error or skip, as for Alpaca). A well-formed
conversation that does not open with a non-empty human turn answered by a non-empty gpt turn
is not a pair: it is left out and counted by reason, not an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from naitbench.data.records import RECORD, BadRecordLog, DataError, FieldRule, OnBad, validate
from naitbench.data.sources import load_source, source_name

SHAREGPT_RULES = {"id": FieldRule(), "conversations": FieldRule(types=(list,))}
TURN_RULES = {"from": FieldRule(), "value": FieldRule(allow_empty=True)}


def first_turn_pairs(spec: Mapping[str, Any], *, on_bad: OnBad, log: BadRecordLog,
                     max_chars: int) -> tuple[list[tuple[int | str, dict]], dict]:
    """(location, {instruction, input, output, source_id}) per usable conversation, and the
    counts: conversations recovered from the source, bad records, pairs, left out by reason."""
    bad_before = len(log.entries)
    raw = load_source(spec, SHAREGPT_RULES, on_bad=on_bad, log=log, max_chars=max_chars)
    recovered = len(raw) + len(log.entries) - bad_before
    where = source_name(spec)
    pairs, not_pairs = [], Counter()
    for line, row in raw:
        try:
            problem = _first_pair_problem(where, line, row["conversations"], max_chars)
        except DataError as error:
            log.reject(error, on_bad)
            continue
        if problem:
            not_pairs[problem] += 1
            continue
        human, gpt = row["conversations"][:2]
        pairs.append((line, {"instruction": human["value"], "input": "",
                             "output": gpt["value"], "source_id": row["id"]}))
    counts = {"conversations_recovered": recovered, "bad_records": len(log.entries) - bad_before,
              "first_turn_pairs": len(pairs), "not_a_pair": dict(sorted(not_pairs.items()))}
    return pairs, counts


def _first_pair_problem(where: str, line: int | str, turns: list, max_chars: int) -> str | None:
    """Why the conversation has no (human, gpt) first pair, or None; DataError if malformed."""
    if not turns:
        return "no turns"
    human = _turn(where, line, turns, 0, max_chars)
    if human["from"] != "human":
        return f"first turn from {human['from']}"
    if not human["value"].strip():
        return "empty human turn"
    if len(turns) < 2:
        return "no answer"
    gpt = _turn(where, line, turns, 1, max_chars)
    if gpt["from"] != "gpt":
        return f"answer from {gpt['from']}"
    if not gpt["value"].strip():
        return "empty gpt answer"
    return None


def _turn(where: str, line: int | str, turns: list, index: int, max_chars: int) -> dict:
    try:
        return validate(where, line, turns[index], TURN_RULES, max_chars)
    except DataError as error:
        name = f"conversations[{index}]"
        field_name = name if error.field == RECORD else f"{name}.{error.field}"
        raise DataError(error.file, error.line, field_name, error.reason) from error
