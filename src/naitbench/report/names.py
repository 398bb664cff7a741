"""Readable names for the report: what a task measures, what an arm is, and whether a task
was the selection target or a transfer task for a given arm.

Titles live here rather than in the task YAMLs so that renaming a title re-runs only the
report stage, not every evaluation. A task or method missing from the tables keeps its id.
"""

from __future__ import annotations

from collections.abc import Iterable

from naitbench.estimate import task_target
from naitbench.evaluate.runner import generic_task
from naitbench.report.compare import Row
from naitbench.report.results import BASE, REFERENCE_FULL, REFERENCE_RANDOM

#: what each lm-eval task of the pack measures, in words
TASK_TITLES = {"nb_humaneval_bpb": "HumanEval solutions, bits per byte",
               "nb_humaneval_pass1": "HumanEval, pass@1",
               "nb_gsm8k_bpb": "GSM8K solutions, bits per byte",
               "nb_gsm8k_em": "GSM8K, exact match of the final answer",
               "nb_mmlu_mc": "MMLU, multiple-choice accuracy",
               "nb_bbh_mc": "BIG-Bench Hard, multiple-choice accuracy",
               "nb_bbh_em": "BIG-Bench Hard, exact match",
               "nb_tydiqa_f1": "TyDi QA, F1"}

#: selection methods and references, in the order the report lists them
METHOD_TITLES = {"nait": "NAIT (published recipe)", "nait_variant": "NAIT (suite variant)",
                 "rds": "RDS+", "less": "LESS", "knn": "embedding kNN", "bm25": "BM25",
                 "dsir": "DSIR",
                 "selectit": "SelectIT", "ifd": "IFD", "perplexity": "perplexity",
                 "length": "length", REFERENCE_RANDOM: "random subsets",
                 REFERENCE_FULL: "full data", BASE: "base model (no tuning)"}

#: the rules of naitbench.select.rules as the report names them ("RDS+ + UOT")
RULE_TITLES = {"max": "max", "mean": "mean", "doubly_greedy": "doubly-greedy",
               "subtask_max_mean": "subtask max of means", "round_robin": "round-robin",
               "uot": "UOT", "knn_uniform": "KNN-Uniform", "knn_kde": "KNN-KDE"}

METRIC_UNITS = {"bits_per_byte": "bits per byte", "acc": "accuracy",
                "exact_match": "exact match", "pass@1": "pass@1", "f1": "F1"}

TARGET, TRANSFER = "target", "transfer"


#: a generic target's tasks (docs/your-own-data.md), by the metric its name ends in
GENERIC_TITLES = {"bpb": "{target} held-out responses, bits per byte",
                  "em": "{target}, exact match of the answer"}


def task_title(task: str) -> str:
    """What the task measures, e.g. "HumanEval solutions, bits per byte"."""
    found = generic_task(task)
    if task not in TASK_TITLES and found:
        return GENERIC_TITLES[found[1]].format(target=found[0])
    return TASK_TITLES.get(task, task)


def role(row: Row) -> str | None:
    """"target" when the arm was selected for the capability the task scores, "transfer"
    when it was selected for another one, None for an untargeted arm or an unmapped task."""
    scored = task_target(row.task)
    if not row.target or scored is None:
        return None
    return TARGET if scored in row.target.split("+") else TRANSFER


def task_role(rows: Iterable[Row], task: str) -> str | None:
    """The task's role for the targeted arms scored on it: target, transfer, or both."""
    roles = {role(r) for r in rows if r.task == task} - {None}
    if len(roles) > 1:
        return f"{TARGET} and {TRANSFER}"
    return next(iter(roles), None)


def task_order(rows: Iterable[Row]) -> list[str]:
    """The tasks of `rows`, target tasks first, then mixed, transfer and untargeted ones."""
    rows = list(rows)
    rank = {TARGET: 0, f"{TARGET} and {TRANSFER}": 1, TRANSFER: 2, None: 3}
    return sorted({r.task for r in rows}, key=lambda t: (rank[task_role(rows, t)], t))


def task_heading(rows: Iterable[Row], task: str) -> str:
    """Title with its role, e.g. "HumanEval solutions, bits per byte (target)"."""
    which = task_role(rows, task)
    return f"{task_title(task)} ({which})" if which else task_title(task)


def arm_label(row: Row) -> str:
    """Short arm id for files and tables read by programs: method/target/ratio."""
    parts = [row.method]
    if row.target:
        parts.append(row.target)
    if row.ratio is not None and row.method not in (BASE, REFERENCE_FULL):
        parts.append(f"{row.ratio:g}")
    return "/".join(parts)


def arm_order(row: Row) -> tuple:
    """Sort key of the report's lists: known methods in table order, others after them."""
    order = list(METHOD_TITLES)
    representation = row.method.partition("+")[0]      # a rule arm after its representation
    position = order.index(representation) if representation in order else len(order)
    return (position, row.method, row.target or "", row.ratio or 0.0)


def method_title(method: str) -> str:
    """The method in words; a rule arm `<representation>+<rule>` as "RDS+ + UOT"."""
    if method in METHOD_TITLES or "+" not in method:
        return METHOD_TITLES.get(method, method)
    representation, _, rule = method.partition("+")
    return f"{METHOD_TITLES.get(representation, representation)} + {RULE_TITLES.get(rule, rule)}"


def arm_names(rows: Iterable[Row]) -> dict[tuple, str]:
    """Readable name of every arm, e.g. "NAIT (published recipe, code)"; the selection
    ratio is added only when the rows hold more than one."""
    rows = list(rows)
    several = len({r.ratio for r in rows if r.ratio is not None}) > 1
    names = {}
    for r in rows:
        details = [r.target] if r.target else []
        if several and r.ratio is not None:
            details.append(f"{r.ratio:.0%}")
        title = method_title(r.method)
        if details and title.endswith(")"):   # "NAIT (published recipe)" + code
            title, _, own = title[:-1].partition(" (")
            details = [own, *details]
        names[r.arm] = f"{title} ({', '.join(details)})" if details else title
    return names


def unit(metric: str) -> str:
    """The metric in words, e.g. "bits per byte"."""
    return METRIC_UNITS.get(metric, metric)


def short_subset_name(name: str, names: Iterable[str]) -> str:
    """A method subset's name without its "-s0" when it is the method's only subset (one
    selection); random draws and selection-seed siblings keep their seed."""
    stem = name.removesuffix("-s0")
    if name.startswith("random-") or stem == name or \
            any(other.startswith(f"{stem}-s") and other != name for other in names):
        return name
    return stem
