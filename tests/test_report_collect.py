"""The report reads the rows of the configured matrix, not whatever an earlier run left."""

from __future__ import annotations

from pathlib import Path

import pytest

from naitbench.io import write_json, write_jsonl
from naitbench.report.collect import collect, selection_costs


def _scored(path: Path, value: float) -> None:
    write_json(path / "metrics.json", {"t/bits_per_byte": value})
    write_jsonl(path / "samples.jsonl", [
        {"task": "t", "doc_id": i, "id": f"x{i}", "metric": "bits_per_byte",
         "higher_is_better": False, "loglikelihood": -value * 10 * (i + 1), "bytes": 10,
         "value": value} for i in range(2)])


def _manifest(data: Path, name: str) -> None:
    write_json(data / "subsets" / f"{name}.manifest.json", {
        "method": name.split("-")[0], "targets": [], "ratio": 0.1, "seed": 0, "name": name,
        "cost": {"wall_s": 1.0, "forward_tokens": 5, "backward_tokens": 0, "shared": {}}})


def test_collect_reads_the_matrix_rows_only(tmp_path):
    data = tmp_path / "data"
    _scored(data / "scores" / "base", 0.7)
    _scored(data / "scores" / "full" / "seed0", 0.6)
    for name, value in (("length-r0.1-s0", 0.65), ("stale-r0.2-s0", 0.1)):
        _scored(data / "scores" / name / "seed0", value)
        _manifest(data, name)
    names = [r.name for r in collect(data, [("full", 0), ("length-r0.1-s0", 0)])]
    assert names == ["base", "full/seed0", "length-r0.1-s0/seed0"]
    assert len(collect(data)) == 4                       # no matrix: everything on disk
    assert [c["subset"] for c in selection_costs(data, ["length-r0.1-s0"])] == ["length-r0.1-s0"]
    with pytest.raises(FileNotFoundError, match="run their evaluate stages"):
        collect(data, [("full", 0), ("length-r0.1-s0", 0), ("length-r0.1-s0", 1)])


def test_a_matrix_without_the_base_models_scores_is_refused(tmp_path):
    """A resumed run once reported 18 of 19 models because the base model's scores were
    missing; the base model is part of every matrix."""
    data = tmp_path / "data"
    _scored(data / "scores" / "full" / "seed0", 0.6)
    with pytest.raises(FileNotFoundError, match=r"scores/base\b.*run their evaluate stages"):
        collect(data, [("full", 0)])
    assert [r.name for r in collect(data)] == ["full/seed0"]   # no matrix: what is on disk
