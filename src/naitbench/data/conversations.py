"""Conversations as instruction pairs: ShareGPT (`conversations`: `from`/`value`, human/gpt)
and chat messages (`messages`: `role`/`content`, user/assistant, leading system messages
allowed), the two shapes the field's pools come in.

`pool.turns` picks the pairs: `first` (the first user message and the answer to it) or
`every` (every assistant answer to a user message, the conversation before that message as
its history, rendered into the record's `input` as `User: ...` / `Assistant: ...` lines so
every prompt template shows it). `pool.fields` renames the keys of a source that names them
otherwise (`{turns: dialogue, role: speaker, content: text}`).

A record of the wrong shape (not an object, a missing id where the format requires one, a
turn that is not an object, a non-string role or content, invalid UTF-8, an absurd length) is
a bad record (error or skip, as for Alpaca), located by file, line (or record index) and
field, e.g. `messages[1].content`. A well-formed conversation that yields no pair is left
out and counted by reason, not an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from naitbench.data.records import RECORD, BadRecordLog, DataError, FieldRule, OnBad, validate
from naitbench.data.sources import load_source, source_name
from naitbench.errors import ConfigError

POLICIES = ("first", "every")


@dataclass(frozen=True)
class ConversationFormat:
    """Where a conversation keeps its turns and how it names speakers."""

    turns: str
    role: str
    content: str
    user: tuple[str, ...]
    assistant: tuple[str, ...]
    system: tuple[str, ...] = ()
    #: the record's id key when the format requires one (kept as `source_id`)
    id_key: str | None = None

    def rules(self) -> dict[str, FieldRule]:
        rules = {self.turns: FieldRule(types=(list,))}
        if self.id_key:
            rules[self.id_key] = FieldRule()
        return rules


FORMATS = {
    "sharegpt": ConversationFormat("conversations", "from", "value", ("human",), ("gpt",),
                                   id_key="id"),
    "messages": ConversationFormat("messages", "role", "content", ("user",), ("assistant",),
                                   ("system",)),
}


def conversation_format(spec: Mapping[str, Any]) -> ConversationFormat:
    """The format `spec.format` names, with the key names `spec.fields` renames."""
    form = FORMATS[spec["format"]]
    fields = dict(spec.get("fields") or {})
    unknown = sorted(set(fields) - {"turns", "role", "content", "id_key"})
    if unknown:
        raise ConfigError(f"pool.fields {unknown}: a {spec['format']} pool renames turns, role, "
                          f"content or id_key")
    return replace(form, **fields)


def conversation_pairs(spec: Mapping[str, Any], *, on_bad: OnBad, log: BadRecordLog,
                       max_chars: int) -> tuple[list[tuple[int | str, dict]], dict]:
    """(location, {instruction, input, output[, source_id]}) per pair, and the counts:
    conversations recovered from the source, bad records, pairs, left out by reason."""
    policy = spec.get("turns", "first")
    if policy not in POLICIES:
        raise ConfigError(f"pool.turns={policy!r}: use one of {list(POLICIES)}")
    form = conversation_format(spec)
    bad_before = len(log.entries)
    raw = load_source(spec, form.rules(), on_bad=on_bad, log=log, max_chars=max_chars)
    recovered = len(raw) + len(log.entries) - bad_before
    where = source_name(spec)
    pairs, not_pairs = [], Counter()
    for line, row in raw:
        try:
            turns = _read_turns(form, where, line, row[form.turns], policy, max_chars)
        except DataError as error:
            log.reject(error, on_bad)
            continue
        found, problem = _pairs(form, turns, policy)
        if not found:
            not_pairs[problem] += 1
            continue
        provenance = {"source_id": row[form.id_key]} if form.id_key else {}
        pairs += [(line, {**pair, **provenance}) for pair in found]
    key = "first_turn_pairs" if policy == "first" else "exchange_pairs"
    counts = {"conversations_recovered": recovered, "bad_records": len(log.entries) - bad_before,
              key: len(pairs), "not_a_pair": dict(sorted(not_pairs.items()))}
    return pairs, counts


def _pairs(form: ConversationFormat, turns: list[tuple[str, str]],
           policy: str) -> tuple[list[dict], str | None]:
    """The pairs of one conversation ((role, content) turns, system turns first), or none
    and why."""
    start = 0
    while start < len(turns) and turns[start][0] in form.system:
        start += 1
    body = turns[start:]
    if not body:
        return [], "no turns"
    if policy == "first":
        problem = _first_problem(form, body)
        if problem:
            return [], problem
        return [{"instruction": body[0][1], "input": "", "output": body[1][1]}], None
    found = []
    for j in range(1, len(body)):
        (asker, question), (answerer, answer) = body[j - 1], body[j]
        if (answerer in form.assistant and asker in form.user and question.strip()
                and answer.strip()):
            history = "\n\n".join(f"{'User' if r in form.user else 'Assistant'}: {text}"
                                  for r, text in body[:j - 1])
            found.append({"instruction": question, "input": history, "output": answer})
    return found, None if found else "no user message answered"


def _first_problem(form: ConversationFormat, turns: list[tuple[str, str]]) -> str | None:
    """Why the conversation has no (user, assistant) first pair, or None."""
    role, text = turns[0]
    if role not in form.user:
        return f"first turn from {role}"
    if not text.strip():
        return f"empty {role} turn"
    if len(turns) < 2:
        return "no answer"
    role, text = turns[1]
    if role not in form.assistant:
        return f"answer from {role}"
    if not text.strip():
        return f"empty {role} answer"
    return None


def _read_turns(form: ConversationFormat, where: str, line: int | str, raw: list, policy: str,
                max_chars: int) -> list[tuple[str, str]]:
    """The validated (role, content) turns a policy reads: `first` stops after the first
    two turns past the system messages (a malformed later turn does not matter to it)."""
    turns: list[tuple[str, str]] = []
    system = 0
    for index in range(len(raw)):
        if policy == "first" and len(turns) >= system + 2:
            break
        turns.append(_turn(form, where, line, raw, index, max_chars))
        if len(turns) == system + 1 and turns[-1][0] in form.system:
            system += 1
    return turns


def _turn(form: ConversationFormat, where: str, line: int | str, turns: list, index: int,
          max_chars: int) -> tuple[str, str]:
    rules = {form.role: FieldRule(), form.content: FieldRule(allow_empty=True)}
    try:
        turn = validate(where, line, turns[index], rules, max_chars)
    except DataError as error:
        name = f"{form.turns}[{index}]"
        field_name = name if error.field == RECORD else f"{name}.{error.field}"
        raise DataError(error.file, error.line, field_name, error.reason) from error
    return turn[form.role], turn[form.content]
