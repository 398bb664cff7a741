"""Target capabilities: a small in-domain set (what targeted selectors may look at) and a
disjoint held-out set (what scoring uses), built from each benchmark's own splits.

Every builder returns records of one shape: id, target, subtask, instruction, input, response,
prompt and an `eval` dict with the benchmark-specific fields scoring needs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from naitbench.data.fields import FieldMap
from naitbench.data.normalise import normalise_text, record_id, strip_calculator_annotations
from naitbench.data.records import BadRecordLog, DataError, FieldRule, OnBad, read_records
from naitbench.data.sources import load_hub, source_name
from naitbench.data.template import PromptFormat
from naitbench.errors import ConfigError, UserError
from naitbench.evaluate.tasks.utils import extract_answer

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
Split = tuple[list[dict], list[dict], dict]
Template = PromptFormat


class DisjointnessError(UserError, ValueError):
    """In-domain and held-out sets share a sample."""


def _sample(items: list, size: int | None, rng: random.Random) -> list:
    if size is None or size >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), size))]


def _record(target: str, subtask: str, instruction: str, input_text: str, response: str,
            template: Template, eval_fields: dict) -> dict:
    instruction, input_text = normalise_text(instruction), normalise_text(input_text)
    response = normalise_text(response)
    return {"id": record_id(instruction, input_text, response), "target": target,
            "subtask": subtask, "instruction": instruction, "input": input_text,
            "response": response, "prompt": template(instruction, input_text),
            "eval": eval_fields}


def question_key(record: Mapping[str, Any]) -> str:
    """What makes two target samples 'the same item': the question, not the answer."""
    return record_id(record["instruction"].lower(), record["input"].lower(), "")


def check_disjoint(name: str, indomain: list[dict], heldout: list[dict]) -> None:
    """Raise if any held-out item also appears (by question) in the in-domain set."""
    seen = {question_key(r): r["id"] for r in indomain}
    shared = [r["id"] for r in heldout if question_key(r) in seen]
    if shared:
        raise DisjointnessError(f"target '{name}': {len(shared)} held-out items also appear in "
                                f"the in-domain set (ids {shared[:5]})")


# ---------------------------------------------------------------- GSM8K (math)
GSM8K_RULES = {"question": FieldRule(), "answer": FieldRule()}
_FINAL = re.compile(r"####\s*(.+)\s*$")


def _gsm8k_record(name: str, row: dict, template: Template) -> dict:
    answer = row["answer"]
    match = _FINAL.search(answer)
    final = match.group(1).strip().replace(",", "") if match else ""
    natural = strip_calculator_annotations(_FINAL.sub("", answer)).strip()
    response = f"{natural}\nThe answer is {final}." if final else natural
    return _record(name, "gsm8k", row["question"], "", response, template,
                   {"question": row["question"], "answer": answer, "final_answer": final,
                    "reference": response})


def _train_heldout(name: str, spec: Mapping, template: Template, read: Reader, rules: dict,
                   make: Callable, parts: tuple[str, str]) -> Split:
    """In-domain sample from one split, held-out sample from another (seeded)."""
    rng = random.Random(spec["seed"])
    first, second = ([make(name, r, template) for _, r in read.part(part, rules)]
                     for part in parts)
    return (_sample(first, spec["indomain_size"], rng), _sample(second, spec["heldout_size"], rng),
            {f"{parts[0]}_read": len(first), f"{parts[1]}_read": len(second)})


def build_gsm8k(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    return _train_heldout(name, spec, template, read, GSM8K_RULES, _gsm8k_record,
                          ("train", "test"))


# ---------------------------------------------------------------- HumanEval (code)
HUMANEVAL_RULES = {k: FieldRule() for k in
                   ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
CODE_INSTRUCTION = "Complete the following Python function."


def build_humaneval(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    rows = [r for _, r in read.part("problems", HUMANEVAL_RULES)]
    records = [
        _record(name, "humaneval", CODE_INSTRUCTION, r["prompt"], r["canonical_solution"],
                template, {k: r[k] for k in HUMANEVAL_RULES})
        for r in rows
    ]
    # The first problems are the in-domain set (a fixed, documented split, as in the pilots).
    cut = spec["indomain_size"]
    heldout = records[cut:]
    if spec.get("heldout_size") is not None:
        heldout = heldout[: spec["heldout_size"]]
    return records[:cut], heldout, {"problems_read": len(records)}


# ---------------------------------------------------------------- MMLU (knowledge)
MMLU_CSV_RULES = {"question": FieldRule(), **{f"choice{i}": FieldRule(allow_empty=True)
                                              for i in range(4)}, "answer": FieldRule()}
MMLU_HUB_RULES = {"question": FieldRule(), "choices": FieldRule(types=(list,)),
                  "answer": FieldRule(types=(int,)), "subject": FieldRule()}


def _mmlu_record(name: str, subject: str, question: str, choices: list[str], answer: int,
                 template: Template) -> dict:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    response = f"The answer is {LETTERS[answer]}. {choices[answer]}"
    return _record(name, subject, question, options, response, template,
                   {"question": question, "choices": choices, "answer": answer,
                    "subject": subject})


def _mmlu_local(name: str, folder: str, template: Template, read: Reader) -> list[dict]:
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no MMLU CSV files in {folder}")
    out = []
    for path in files:
        subject = re.sub(r"_(dev|test|val)$", "", path.stem)
        for line, row in read.file(path, MMLU_CSV_RULES):
            if not row["answer"].strip().isdigit() or int(row["answer"]) > 3:
                raise DataError(path, line, "answer",
                                f"wrong value: expected 0-3, got {row['answer']!r}")
            choices = [row[f"choice{i}"] for i in range(4)]
            out.append(_mmlu_record(name, subject, row["question"], choices,
                                    int(row["answer"]), template))
    return out


def build_mmlu(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    rng = random.Random(spec["seed"])
    if read.source == "hub":
        dev, test = ([_mmlu_record(name, r["subject"], r["question"], r["choices"], r["answer"],
                                   template) for _, r in read.part(part, MMLU_HUB_RULES)]
                     for part in ("dev", "test"))
    else:
        dev = _mmlu_local(name, spec["local"]["dev"], template, read)
        test = _mmlu_local(name, spec["local"]["test"], template, read)
    return (_sample(dev, spec["indomain_size"], rng), _sample(test, spec["heldout_size"], rng),
            {"dev_read": len(dev), "test_read": len(test)})


# ---------------------------------------------------------------- BBH (reasoning)
BBH_RULES = {"input": FieldRule(), "target": FieldRule()}
_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")


def _bbh_choices(question: str) -> list[str]:
    return [m.group(0) for line in question.split("\n") if (m := _OPTION.match(line.strip()))]


def _bbh_record(name: str, task: str, question: str, response: str, target: str,
                template: Template) -> dict:
    choices = [c.split(")", 1)[0] + ")" for c in _bbh_choices(question)]
    return _record(name, task, question, "", response, template,
                   {"task": task, "input": question, "target": target,
                    "choices": choices if target in choices else []})


def parse_cot_prompt(text: str) -> list[tuple[str, str]]:
    """Split a BBH chain-of-thought prompt file into its (question, reasoning answer) pairs."""
    body = text.split("-----", 1)[-1]
    pairs = []
    for block in re.split(r"\n\s*\nQ: ", "\n\n" + body.strip())[1:]:
        question, _, answer = block.partition("\nA: ")
        pairs.append((question.strip(), answer.strip()))
    return pairs


def build_bbh(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    rng = random.Random(spec["seed"])
    if read.source == "hub":
        raise NotImplementedError("BBH from the hub: lukaemon/bbh has no chain-of-thought "
                                  "exemplars; point targets.reasoning.local at a BBH checkout")
    task_dir, cot_dir = Path(spec["local"]["tasks"]), Path(spec["local"]["cot_prompts"])
    tasks = spec.get("tasks") or sorted(p.stem for p in task_dir.glob("*.json"))
    indomain, heldout, counts = [], [], {"tasks": len(tasks), "exemplar_overlap_removed": 0}
    for task in tasks:
        examples = [_bbh_record(name, task, r["input"], r["target"], r["target"], template)
                    for _, r in read.file(task_dir / f"{task}.json", BBH_RULES,
                                          records_key="examples")]
        cot_path = cot_dir / f"{task}.txt"
        exemplars = [
            _bbh_record(name, task, q, a, _final_bbh_answer(a), template)
            for q, a in parse_cot_prompt(cot_path.read_text(encoding="utf-8"))
        ]
        keys = {question_key(r) for r in exemplars}
        clean = [r for r in examples if question_key(r) not in keys]
        counts["exemplar_overlap_removed"] += len(examples) - len(clean)
        indomain.extend(exemplars)
        heldout.extend(_sample(clean, spec["heldout_per_task"], rng))
    return _sample(indomain, spec["indomain_size"], rng), heldout, counts


def _final_bbh_answer(answer: str) -> str:
    match = re.search(r"the answer is (.+?)\.?$", answer.strip())
    return match.group(1).strip() if match else ""


# ---------------------------------------------------------------- TyDiQA GoldP (multilingual QA)
TYDIQA_RULES = {"question": FieldRule(), "context": FieldRule(),
                "answers": FieldRule(types=(dict,))}


def _tydiqa_record(name: str, row: dict, template: Template) -> dict:
    texts = row["answers"].get("text") or []
    if not texts:
        raise ValueError(f"TyDiQA row {row.get('id')} has no answer text")
    language = str(row.get("id", "unknown")).split("-", 1)[0]
    return _record(name, language, row["question"], row["context"], texts[0], template,
                   {"question": row["question"], "context": row["context"], "answers": texts})


def build_tydiqa(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    return _train_heldout(name, spec, template, read, TYDIQA_RULES, _tydiqa_record,
                          ("train", "dev"))


# ---------------------------------------------------------------- generic (your own capability)
#: the fields a generic target reads; `subtask` and `answer` only when `fields` names their key
GENERIC_RULES = {"instruction": FieldRule(), "input": FieldRule(required=False, allow_empty=True),
                 "response": FieldRule(), "subtask": FieldRule(),
                 "answer": FieldRule(types=(str, int, float))}
GENERIC_OPTIONAL = ("subtask", "answer")


def _generic_fields(name: str, spec: Mapping) -> tuple[FieldMap, dict[str, FieldRule]]:
    given = dict(spec.get("fields") or {})
    unknown = sorted(set(given) - set(GENERIC_RULES))
    if unknown:
        raise ConfigError(f"targets.{name}.fields names {unknown}; a generic target reads "
                          f"{sorted(GENERIC_RULES)}")
    rules = {k: rule for k, rule in GENERIC_RULES.items()
             if k not in GENERIC_OPTIONAL or given.get(k)}
    fields = FieldMap.from_config(rules, {k: v for k, v in given.items() if k in rules},
                                  f"targets.{name}.fields")
    return fields, rules


def _answer_pattern(name: str, spec: Mapping) -> re.Pattern | None:
    text = spec.get("answer_pattern")
    if not text:
        return None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"targets.{name}.answer_pattern {text!r} is not a regular "
                          f"expression: {exc}") from exc
    if pattern.groups > 1:
        raise ConfigError(f"targets.{name}.answer_pattern {text!r} has {pattern.groups} "
                          f"groups: give one group around the answer, or none")
    return pattern


def _hold_out(records: list[dict], size: int, rng: random.Random, where: str,
              name: str) -> tuple[list[dict], list[dict]]:
    """Held-out items drawn by question, so a question asked twice lands on one side."""
    keys = list(dict.fromkeys(question_key(r) for r in records))
    if size >= len(keys):
        raise ConfigError(f"targets.{name}.heldout_size={size} holds out all {len(keys)} "
                          f"distinct questions of {where}: leave some in-domain, or give a "
                          f"held-out file")
    chosen = set(rng.sample(keys, size))
    return ([r for r in records if question_key(r) not in chosen],
            [r for r in records if question_key(r) in chosen])


def build_generic(name: str, spec: Mapping, template: Template, read: Reader) -> Split:
    """A capability of the user's own: instruction-response pairs from a file or HF dataset
    under `spec.fields`, held-out items from their own file or drawn from the in-domain one
    (by `heldout_size` and `seed`); scored by the pack's generic tasks (bits per byte of the
    references; exact match of the answer `answer_pattern` or `fields.answer` gives)."""
    fields, rules = _generic_fields(name, spec)
    pattern = _answer_pattern(name, spec)

    def records(part: str, scored: bool) -> list[dict]:
        out = []
        for line, raw in read.part(part, fields.rules(rules)):
            row = fields.read(raw)
            answer = row["answer"] if "answer" in rules else (
                extract_answer(pattern, row["response"]) if pattern else None)
            if scored and (pattern or "answer" in rules) and \
                    (answer is None or not str(answer).strip()):
                key = fields.keys["answer" if "answer" in rules else "response"]
                reason = ("empty: no answer to score" if "answer" in rules else
                          f"no answer: answer_pattern {pattern.pattern!r} matches nothing here")
                read.log.reject(DataError(read.where(part), line, key, reason), read.on_bad)
                continue
            out.append(_record(name, row.get("subtask") or name, row["instruction"],
                               row.get("input") or "", row["response"], template,
                               {"kind": "generic", "answer": None if answer is None
                                else str(answer),
                                "answer_pattern": pattern.pattern if pattern else None}))
        return out

    rng = random.Random(spec["seed"])
    if read.has("heldout"):
        indomain, heldout = records("indomain", False), records("heldout", True)
        counts = {"indomain_read": len(indomain), "heldout_read": len(heldout)}
        heldout = _sample(heldout, spec.get("heldout_size"), rng)
    else:
        size = spec.get("heldout_size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"targets.{name}: no held-out file (targets.{name}.{read.source}"
                              f".heldout) and heldout_size={size!r}: give a held-out file or "
                              f"how many items to hold out of the in-domain one")
        pooled = records("indomain", True)
        indomain, heldout = _hold_out(pooled, size, rng, read.where("indomain"), name)
        counts = {"indomain_read": len(pooled)}
    return _sample(indomain, spec.get("indomain_size"), rng), heldout, counts


BUILDERS: dict[str, Callable[..., Split]] = {
    "gsm8k": build_gsm8k, "humaneval": build_humaneval, "mmlu": build_mmlu,
    "bbh": build_bbh, "tydiqa": build_tydiqa, "generic": build_generic,
}


class Reader:
    """Reads one target's parts from its configured source with the shared validation."""

    def __init__(self, spec: Mapping[str, Any], *, on_bad: OnBad, log: BadRecordLog,
                 max_chars: int):
        self.spec, self.on_bad, self.log, self.max_chars = spec, on_bad, log, max_chars
        self.source = spec.get("source")

    def part(self, name: str, rules: dict, records_key: str | None = None) -> list:
        """Read a named part (train, test, ...) from `local.<name>` or `hub.<name>`."""
        if self.source == "hub":
            return load_hub(self.spec["hub"][name], rules, on_bad=self.on_bad, log=self.log,
                            max_chars=self.max_chars)
        if self.source != "local":
            raise ConfigError(f"unknown data source {self.source!r}: use 'local' or 'hub'")
        return self.file(self.spec["local"][name], rules, records_key)

    def has(self, name: str) -> bool:
        """Whether the source configures part `name` (a generic target's optional held-out)."""
        return bool((self.spec.get(self.source) or {}).get(name))

    def where(self, name: str) -> str:
        """How errors name part `name`: its file, or the hub dataset."""
        local_key = "path"
        return source_name({"source": self.source, local_key: self.spec["local"].get(name),
                            "hub": (self.spec.get("hub") or {}).get(name)}, local_key)

    def file(self, path: str | Path, rules: dict, records_key: str | None = None) -> list:
        """Read one local file."""
        return read_records(path, rules, on_bad=self.on_bad, log=self.log,
                            max_chars=self.max_chars, records_key=records_key)


def build_target(name: str, spec: Mapping[str, Any], template: Template | str, *,
                 on_bad: OnBad, log: BadRecordLog, max_chars: int) -> Split:
    """Build one target's in-domain and held-out sets and check they are disjoint;
    `template`: the prompt format (a fixed-text one may be given by name)."""
    if isinstance(template, str):
        template = PromptFormat(template)
    kind = spec["kind"]
    if kind not in BUILDERS:
        raise ConfigError(f"target '{name}': unknown kind {kind!r}; known: {sorted(BUILDERS)}")
    if spec.get("source") is None:
        raise ConfigError(f"target '{name}' ({kind}) has no data source configured: set "
                         f"targets.{name}.source to 'local' (with local paths) or 'hub'")
    reader = Reader(spec, on_bad=on_bad, log=log, max_chars=max_chars)
    indomain, heldout, counts = BUILDERS[kind](name, spec, template, reader)
    if not indomain or not heldout:
        raise ConfigError(f"target '{name}': empty split (in-domain {len(indomain)}, "
                         f"held-out {len(heldout)}); check its sizes and source")
    check_disjoint(name, indomain, heldout)
    return indomain, heldout, {**counts, "indomain": len(indomain), "heldout": len(heldout)}
