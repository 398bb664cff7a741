"""Scoring helpers the task YAMLs of this folder name with `!function utils.<name>`.

lm-eval loads this file by path next to the YAMLs, so it imports only the standard library.
Each `*_results(doc, results)` returns one metric value per item (lm-eval aggregates them and
logs them per item with `log_samples`).
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any

CODE_TIMEOUT_S = 10.0


def bits_per_byte_results(doc: dict, results: list) -> dict:
    """(loglikelihood, UTF-8 bytes) of the reference; the task aggregates them with
    lm-eval's `bits_per_byte` (-sum ll / sum bytes / ln 2, a byte-weighted mean).

    The reference is the doc's `response` field (the YAMLs' doc_to_target).
    """
    loglikelihood, _ = results[0]
    return {"bits_per_byte": (loglikelihood, len(doc["response"].encode("utf-8")))}


def closed_choice_docs(dataset: Any) -> Any:
    """Keep BBH items whose answer is one of listed options (eval.choices non-empty)."""
    return dataset.filter(lambda doc: len(doc["eval"]["choices"]) > 0)


# ---------------------------------------------------------------- GSM8K
_ANSWER_IS = re.compile(r"answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def _canonical_number(text: str) -> str:
    text = text.replace(",", "").strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value == int(value) else str(value)


def gsm8k_answer(generation: str) -> str:
    """The number after the last "answer is", else the last number in the text, else ''."""
    found = _ANSWER_IS.findall(generation) or _NUMBER.findall(generation)
    return _canonical_number(found[-1]) if found else ""


def gsm8k_exact_match_results(doc: dict, results: list) -> dict:
    gold = _canonical_number(doc["eval"]["final_answer"])
    return {"exact_match": float(gsm8k_answer(results[0]) == gold)}


# ---------------------------------------------------------------- BBH
_BBH_ANSWER = re.compile(r"answer is:?\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_OPTION = re.compile(r"\([A-Z]\)")


def bbh_answer(generation: str, target: str) -> str:
    """The text after the last "the answer is" (else the first non-empty line), without a
    final period; for lettered targets such as "(B)", only the first "(X)" in it."""
    found = _BBH_ANSWER.findall(generation)
    lines = [line.strip() for line in generation.splitlines() if line.strip()]
    answer = found[-1] if found else (lines[0] if lines else "")
    answer = answer.strip().rstrip(".").strip()
    if _OPTION.fullmatch(target):
        option = _OPTION.search(answer)
        return option.group(0) if option else answer
    return answer


def bbh_exact_match_results(doc: dict, results: list) -> dict:
    target = doc["eval"]["target"].strip()
    return {"exact_match": float(bbh_answer(results[0], target).lower() == target.lower())}


# ---------------------------------------------------------------- TyDiQA
def _squad_tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no English articles, split on space."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = _squad_tokens(prediction), _squad_tokens(gold)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref:
        return float(pred == ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def tydiqa_f1_results(doc: dict, results: list) -> dict:
    return {"f1": max(token_f1(results[0], gold) for gold in doc["eval"]["answers"])}


# ---------------------------------------------------------------- HumanEval
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def humaneval_program(doc: dict, generation: str) -> str:
    """The program to test: the problem's prompt followed by the generated code.

    A generation is either the function body (as trained: the response continues the
    signature) or, from a chat-style model, a full definition, possibly in a code fence; a
    full definition simply follows the prompt's stub and replaces it.
    """
    fenced = _FENCE.search(generation)
    code = fenced.group(1) if fenced else generation
    spec = doc["eval"]
    if re.search(rf"^def {re.escape(spec['entry_point'])}\s*\(", code, re.MULTILINE):
        body = "\n" + code
    else:
        body = code
    return f"{spec['prompt']}{body}\n\n{spec['test']}\n\ncheck({spec['entry_point']})\n"


def run_program(program: str, timeout_s: float = CODE_TIMEOUT_S) -> bool:
    """Run untrusted code in a separate, isolated Python process; True when it exits with 0."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program)
        try:
            done = subprocess.run([sys.executable, "-I", path], cwd=tmp, capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def humaneval_pass_results(doc: dict, results: list) -> dict:
    if os.environ.get("HF_ALLOW_CODE_EVAL") != "1":
        raise RuntimeError("nb_humaneval_pass1 executes model-written code: set "
                           "HF_ALLOW_CODE_EVAL=1 (and confirm_run_unsafe_code) to allow it")
    return {"pass@1": float(run_program(humaneval_program(doc, results[0])))}


# ---------------------------------------------------------------- generic targets
def extract_answer(pattern: re.Pattern, text: str) -> str | None:
    """The first match of `pattern` in `text` (its group when it has one), or None; the same
    rule reads a generic target's references at preparation and the model's outputs here."""
    match = pattern.search(text)
    if match is None:
        return None
    return (match.group(1) if pattern.groups else match.group(0)).strip()


def normalise_answer(text: str) -> str:
    """Answers compared without case, surrounding or repeated spaces and a final period."""
    return " ".join(text.strip().rstrip(".").split()).casefold()


def generic_exact_match_results(doc: dict, results: list) -> dict:
    """Exact match of the answer in the model's response (the target's `answer_pattern`;
    without one, the whole response) against the item's answer."""
    pattern, generation = doc["eval"]["answer_pattern"], results[0]
    predicted = extract_answer(re.compile(pattern), generation) if pattern else generation
    gold = normalise_answer(doc["eval"]["answer"])
    return {"exact_match": float(normalise_answer(predicted or "") == gold)}
