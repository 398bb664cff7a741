"""The report says which precision and device made every score and refuses to compare scores
of different precisions unless report.allow_mixed_precision asks for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_data import fabricate

from naitbench.config import compose
from naitbench.io import write_json
from naitbench.report.__main__ import build_report
from naitbench.report.compute import MixedPrecisionError

CPU_BF16 = {"precision": "bf16", "device": "cpu"}
CPU_FP32 = {"precision": "fp32", "device": "cpu"}


def record_stages(data: Path, odd_train: str | None = None) -> None:
    """Write each stage's `compute` as the stages do: training bf16 (`odd_train`, one model,
    fp32), scoring fp32, NAIT's feature store bf16."""
    for score_dir in (data / "scores").glob("**/metrics.json"):
        write_json(score_dir.parent / "results.json", {"compute": CPU_FP32})
        if score_dir.parent.name.startswith("seed"):
            run = data / "runs" / score_dir.parent.parent.name / score_dir.parent.name
            odd = f"{run.parent.name}/{run.name}" == odd_train
            write_json(run / "train_metrics.json", {
                "examples_trained": 98, "epochs": 2, "steps": 26, "tokens": 40000,
                "wall_time_s": 300.0, "tokens_per_s": 133.0, "final_loss": 1.2,
                "compute": CPU_FP32 if odd else CPU_BF16})
    manifest = data / "subsets" / "nait-code-r0.1-s0.manifest.json"
    content = json.loads(manifest.read_text())
    content["cost"]["shared"] = {"data/features/pool-x": {"wall_s": 1.0, "forward_tokens": 9,
                                                          "compute": CPU_BF16}}
    write_json(manifest, content)


def build(data: Path, *overrides: str) -> str:
    cfg = compose(["profile=smoke", f"paths.data_dir={data}", "tracking=disabled",
                   "runs.targeted=[nait]", "runs.untargeted=[]", "runs.random_seeds=[0,1,2]",
                   *overrides])
    return build_report(cfg).read_text()


def test_the_report_says_which_precision_made_every_score(tmp_path):
    data = tmp_path / "data"
    fabricate(data, {"nait-code-r0.1-s0": {"nb_humaneval_bpb": -0.03, "nb_gsm8k_bpb": -0.01}},
              seeds=[0], n_random=3)
    record_stages(data)
    text = build(data)
    assert "- **precision**: features bf16, train bf16, evaluate fp32" in text
    assert "| nait-code-r0.1-s0/seed0 | bf16 (cpu) | bf16 (cpu) | fp32 (cpu) |" in text
    assert "| random-r0.1-s1/seed0 | - | bf16 (cpu) | fp32 (cpu) |" in text
    assert "| base | - | - | fp32 (cpu) |" in text


def test_mixed_precisions_are_refused_unless_asked_for(tmp_path):
    data = tmp_path / "data"
    fabricate(data, {"nait-code-r0.1-s0": {"nb_humaneval_bpb": -0.03, "nb_gsm8k_bpb": -0.01}},
              seeds=[0], n_random=3)
    record_stages(data, odd_train="random-r0.1-s2/seed0")
    with pytest.raises(MixedPrecisionError, match=r"train: bf16 \(4 models.*fp32 \(1 models, "
                                                  r"e\.g\. random-r0\.1-s2/seed0\).*"
                                                  r"report\.allow_mixed_precision=true"):
        build(data)
    text = build(data, "report.allow_mixed_precision=true")
    assert ("- **precision**: MIXED, compared anyway (report.allow_mixed_precision=true): "
            "train: bf16 (4 models") in text
    assert "| random-r0.1-s2/seed0 | - | fp32 (cpu) | fp32 (cpu) |" in text


def test_runs_without_a_record_read_as_not_recorded(tmp_path):
    data = tmp_path / "data"
    fabricate(data, {"nait-code-r0.1-s0": {"nb_humaneval_bpb": -0.03, "nb_gsm8k_bpb": -0.01}},
              seeds=[0], n_random=3)
    text = build(data)
    assert "- **precision**: not recorded" in text
    assert "| full/seed0 | - | not recorded | not recorded |" in text
