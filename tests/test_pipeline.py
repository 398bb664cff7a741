"""The smoke profile's whole `dvc repro` in a temporary copy of the repository: every stage
runs, the report's numbers match the metrics files, a second `dvc repro` does nothing, and a
`dvc exp run -S` sweep re-runs only what its parameter touches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import repo_copy, run_ok


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path, data_root):
    copy, env = repo_copy(tmp_path)
    profile = ["profile=smoke", f"paths.data_root={data_root}", "tracking=disabled"]
    run_ok([sys.executable, "-m", "naitbench.config", "dump", *profile], copy, env)
    first = run_ok([sys.executable, "-m", "dvc", "repro"], copy, env)
    for stage in ("prepare_raters@second", "features", "select@nait-code-0.1",
                  "select_own@less-code-0.1", "select@rds+uot-code-0.1",
                  "select_untargeted@selectit-0.1",
                  "select_random@0.1-2", "train_full@0", "evaluate_base", "report"):
        assert f"Running stage '{stage}'" in first
    data = copy / "data"
    rows = json.loads((data / "report" / "comparison.json").read_text())["rows"]
    targeted = {f"{m}/code/0.1" for m in ("nait", "nait_variant", "rds", "knn", "less", "bm25",
                                          "dsir", "rds+uot")}
    untargeted = {f"{m}/0.1" for m in ("length", "perplexity", "ifd", "selectit")}
    assert {r["arm"] for r in rows} == {"base", "full", "random/0.1"} | targeted | untargeted
    for row in rows:
        if row["arm"] == "random/0.1":
            dirs = [data / "scores" / f"random-r0.1-s{s}" / "seed0" for s in range(3)]
        elif row["arm"] in ("base", "full"):
            dirs = [data / "scores" / ("base" if row["arm"] == "base" else "full/seed0")]
        elif row["arm"] in untargeted:
            dirs = [data / "scores" / f"{row['arm'].split('/')[0]}-r0.1-s0" / "seed0"]
        else:
            method, target, _ = row["arm"].split("/")
            dirs = [data / "scores" / f"{method}-{target}-r0.1-s0" / "seed0"]
        values = [json.loads((d / "metrics.json").read_text())[f"{row['task']}/{row['metric']}"]
                  for d in dirs]
        assert row["values"] == pytest.approx(values)
        assert row["mean"] == pytest.approx(sum(values) / len(values))
    report = (data / "report" / "report.md").read_text()
    assert "rank" in report and "Selection cost" in report and "RDS+ + UOT (code)" in report
    manifest = json.loads((data / "subsets" / "rds+uot-code-r0.1-s0.manifest.json").read_text())
    assert manifest["method"] == "rds+uot" and manifest["selector"]["rule"] == "uot"
    full_metrics = json.loads((data / "runs" / "full" / "seed0" / "train_metrics.json")
                              .read_text())
    assert (f"| full | 0 | {full_metrics['examples_trained']} | {full_metrics['epochs']} | "
            f"{full_metrics['steps']} |") in report
    assert "data:image/png;base64," in (data / "report" / "report.html").read_text()
    second = run_ok([sys.executable, "-m", "dvc", "repro"], copy, env)
    assert "Running stage" not in second

    run_ok(["git", "add", "-A"], copy, env)
    run_ok(["git", "commit", "-qm", "smoke run"], copy, env)
    # DVC composes params.yaml from conf/ again: the profile's overrides are repeated
    sets = [arg for item in [*profile, "report.power=0.9"] for arg in ("-S", item)]
    exp = run_ok([sys.executable, "-m", "dvc", "exp", "run", *sets], copy, env)
    assert "Running stage 'report'" in exp and "Running stage 'train" not in exp
    shown = run_ok([sys.executable, "-m", "dvc", "exp", "show", "--json"], copy, env)
    assert _has_param(json.loads(shown), "power", 0.9)

    # Features re-extracted in another process (with another batch size) and the selections
    # that read them re-run: training depends on the ids-only subset files, so no training or
    # scoring stage is out of date (test_select checks that float noise leaves those files
    # unchanged); the methods with passes of their own (select_own) do not read the features
    # and are not out of date either.
    subset_files = {p: p.read_bytes() for p in (data / "subsets").glob("*-s0.jsonl")
                    if not p.name.endswith(".scores.jsonl")}
    run_ok([sys.executable, "-m", "naitbench.config", "dump", *profile, "report.power=0.9",
            "features.batch_size=3"], copy, env)
    rerun = run_ok([sys.executable, "-m", "dvc", "repro", "--glob", "select@*"], copy, env)
    assert "Running stage 'features'" in rerun
    assert all(f"Running stage 'select@{m}-code-0.1'" in rerun for m in ("nait", "rds"))
    assert {p: p.read_bytes() for p in subset_files} == subset_files
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=copy,
                            env=env, capture_output=True, text=True, check=True).stdout
    stale = set(json.loads(status))
    assert stale == {"report"}        # it reads the scores files; nothing is trained again


def _has_param(tree: object, key: str, value: object) -> bool:
    """Whether `dvc exp show --json` holds an experiment with params `key: value`."""
    if isinstance(tree, dict):
        if tree.get(key) == value:
            return True
        return any(_has_param(v, key, value) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_param(v, key, value) for v in tree)
    return False
