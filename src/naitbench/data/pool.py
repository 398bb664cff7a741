"""The candidate pool: normalised, id'd, de-duplicated, subsampled, templated, token-counted,
then held to the length policy (naitbench.data.length).

Sources come in three formats: `alpaca` (instruction, input, output), `sharegpt` and
`messages` (conversations: naitbench.data.conversations), all normalised into one record
schema.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from naitbench.data.conversations import FORMATS, conversation_pairs
from naitbench.data.fields import FieldMap
from naitbench.data.length import apply_length_policy
from naitbench.data.normalise import normalise_text, record_id
from naitbench.data.records import BadRecordLog, FieldRule, OnBad
from naitbench.data.sources import load_source
from naitbench.data.template import PromptFormat
from naitbench.errors import ConfigError

ALPACA_RULES = {
    "instruction": FieldRule(),
    "input": FieldRule(required=False, allow_empty=True),
    "output": FieldRule(),
}


def build_pool(spec: Mapping[str, Any], tokenizer: Any, *, on_bad: OnBad, log: BadRecordLog,
               max_chars: int) -> tuple[list[dict], dict]:
    """Return the pool records and the counts that go into the preparation report.

    `pool.size` draws its sample before the length policy, so a slice may keep fewer records
    (the counts say how many the policy dropped).
    """
    raw, counts = read_rows(spec, on_bad=on_bad, log=log, max_chars=max_chars)
    records, seen, duplicates = [], set(), 0
    for line, row in raw:
        instruction = normalise_text(row["instruction"])
        input_text = normalise_text(row.get("input") or "")
        output = normalise_text(row["output"])
        rid = record_id(instruction, input_text, output)
        if rid in seen:
            duplicates += 1
            continue
        seen.add(rid)
        records.append({"id": rid, "source_line": line, **_provenance(row),
                        "instruction": instruction, "input": input_text, "output": output})
    records = subsample(records, spec.get("size"), spec.get("seed", 0))
    template = PromptFormat(spec["template"], tokenizer)
    for record in records:
        prompt = template(record["instruction"], record["input"])
        record["prompt"] = prompt
        record["response"] = record["output"]
        record["n_prompt_tokens"] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        record["n_response_tokens"] = len(
            tokenizer(record["output"], add_special_tokens=False)["input_ids"])
    sampled = len(records)
    records, length = apply_length_policy(records, tokenizer, spec["length_policy"],
                                          spec["max_length"])
    counts.update({"read": len(raw), "duplicates_removed": duplicates,
                   "after_dedup": len(seen), "sampled": sampled, "length_policy": length,
                   "kept": len(records)})
    return records, counts


def read_rows(spec: Mapping[str, Any], *, on_bad: OnBad, log: BadRecordLog,
              max_chars: int) -> tuple[list[tuple[int | str, dict]], dict]:
    """The raw (location, {instruction, input, output[, source_id]}) rows of `spec.format`;
    an Alpaca-shaped source naming its keys otherwise is read through `pool.fields`."""
    form = spec.get("format", "alpaca")
    if form == "alpaca":
        fields = FieldMap.from_config(ALPACA_RULES, spec.get("fields"), "pool.fields")
        rows = load_source(spec, fields.rules(ALPACA_RULES), on_bad=on_bad, log=log,
                           max_chars=max_chars)
        return [(line, {**fields.read(row), **_provenance(row)}) for line, row in rows], {}
    if form in FORMATS:
        return conversation_pairs(spec, on_bad=on_bad, log=log, max_chars=max_chars)
    raise ConfigError(f"pool.format={form!r}: use one of {['alpaca', *FORMATS]}")


def _provenance(row: Mapping[str, Any]) -> dict:
    return {"source_id": row["source_id"]} if "source_id" in row else {}


def subsample(records: list[dict], size: int | None, seed: int) -> list[dict]:
    """Seeded subsample that keeps source order, so the pool file reads like its source."""
    if size is None or size >= len(records):
        return records
    if size <= 0:
        raise ConfigError(f"pool.size must be positive or null, got {size}")
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]
