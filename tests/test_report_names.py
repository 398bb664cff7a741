"""Readable task and arm names, and the target/transfer role of a task for an arm."""

from __future__ import annotations

from naitbench.evaluate import available_tasks
from naitbench.report.compare import Row
from naitbench.report.names import (
    TASK_TITLES,
    arm_names,
    role,
    task_heading,
    task_order,
)


def _row(method, task, target=None, ratio=0.1):
    return Row(method=method, target=target, ratio=ratio, task=task, metric="bits_per_byte",
               higher_is_better=False, mean=0.5, sd=float("nan"), n=1, values=[0.5],
               vs_random=None, vs_full=None)


def test_every_task_of_the_pack_has_a_title():
    assert sorted(TASK_TITLES) == available_tasks()


def test_role_is_target_when_the_arm_was_selected_for_the_scored_capability():
    rows = [_row("nait", "nb_humaneval_bpb", "code"), _row("nait", "nb_gsm8k_bpb", "code"),
            _row("length", "nb_gsm8k_bpb")]
    assert [role(r) for r in rows] == ["target", "transfer", None]
    assert task_order(rows) == ["nb_humaneval_bpb", "nb_gsm8k_bpb"]
    assert task_heading(rows, "nb_gsm8k_bpb") == "GSM8K solutions, bits per byte (transfer)"
    both = [*rows, _row("nait", "nb_gsm8k_bpb", "math")]
    assert task_heading(both, "nb_gsm8k_bpb").endswith("(target and transfer)")
    assert task_heading(rows, "my_task") == "my_task"     # unknown tasks keep their id


def test_arm_names_add_the_ratio_only_when_the_run_has_several():
    one = [_row("nait", "t", "code"), _row("random", "t"), _row("base", "t", ratio=None),
           _row("full", "t", ratio=None), _row("mine", "t")]
    assert list(arm_names(one).values()) == ["NAIT (published recipe, code)", "random subsets",
                                             "base model (no tuning)", "full data", "mine"]
    two = [_row("rds", "t", "code", 0.05), _row("rds", "t", "code", 0.2)]
    assert list(arm_names(two).values()) == ["RDS+ (code, 5%)", "RDS+ (code, 20%)"]
