"""The rebuild check's comparison logic on small fabricated revisions, and the commands its
rebuild runs (the rebuild itself, `make repro`'s path for the default profile from a fresh
clone, takes about 1.5 hours and is run by hand)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from naitbench.recheck import (
    Check,
    Snapshot,
    cpu_kind,
    header_task,
    main,
    page_checks,
    page_numbers,
    point_at_mirror,
    recheck,
    repro_commands,
    screen_numbers,
    snapshot_from_tree,
)

PAGE = """# Results

| part | measured |
|---|---|
| whole run | 51 min 07 s |

| arm | HumanEval bpb | vs random (rank of 4) | GSM8K bpb (transfer) |
|---|---|---|---|
| base model | 0.5449 | | 0.6964 |
| random, 3 subsets (mean, sd) | 0.5357 (0.0018) | | 0.6914 (0.0019) |
| NAIT (code) | **0.5336** | **-0.0020 (1)** | 0.6872 |
| mystery method | 0.9999 | | |
"""


def _row(arm: str, method: str, task: str, values: list[float], target: str | None = None,
         vs_random: dict | None = None) -> dict:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(
        values) > 1 else float("nan")
    return {"arm": arm, "method": method, "target": target, "ratio": 0.1, "task": task,
            "metric": "bits_per_byte", "higher_is_better": False, "mean": mean, "sd": sd,
            "n": len(values), "values": values, "vs_random": vs_random, "vs_full": None}


def _revision(root: Path, nait_code: float, nait_rank: int = 1, lock_md5: str = "aaa",
              with_knn: bool = True) -> Path:
    """A fabricated revision: metrics files, comparison rows, dvc.lock and the page."""
    he, gsm = "nb_humaneval_bpb", "nb_gsm8k_bpb"
    scores = {"base": {he: 0.54492, gsm: 0.69643}, "nait-code-r0.1-s0/seed0":
              {he: nait_code, gsm: 0.68718}}
    if with_knn:
        scores["knn-code-r0.1-s0/seed0"] = {he: 0.5360, gsm: 0.6931}
    for name, metrics in scores.items():
        path = root / "data" / "scores" / name / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({f"{t}/bits_per_byte": v for t, v in metrics.items()}))
    random_he, random_gsm = [0.5340, 0.5357, 0.5374], [0.6895, 0.6914, 0.6933]
    rows = [_row("base", "base", he, [0.54492]), _row("base", "base", gsm, [0.69643]),
            _row("random/0.1", "random", he, random_he),
            _row("random/0.1", "random", gsm, random_gsm),
            _row("nait/code/0.1", "nait", he, [nait_code], "code",
                 {"difference": nait_code - 0.5357, "rank": nait_rank}),
            _row("nait/code/0.1", "nait", gsm, [0.68718], "code",
                 {"difference": 0.68718 - 0.6914, "rank": 1})]
    comparison = root / "data" / "report" / "comparison.json"
    comparison.parent.mkdir(parents=True)
    comparison.write_text(json.dumps({"rows": rows, "costs": [{"wall_s": 1.0}]}))
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "features": {"outs": [{"path": "data/features", "md5": "fff.dir"}]},
        "select@nait-code-0.1": {"outs": [{"path": "data/subsets/nait.jsonl",
                                           "md5": lock_md5}]}}}))
    (root / "docs" / "results").mkdir(parents=True)
    (root / "docs" / "results" / "embedded.md").write_text(PAGE)
    return root


def test_numbers_beyond_the_tolerance_are_reported(tmp_path):
    committed = snapshot_from_tree(_revision(tmp_path / "a", nait_code=0.53362))
    rebuilt = snapshot_from_tree(_revision(tmp_path / "b", nait_code=0.53378, nait_rank=2,
                                           lock_md5="bbb", with_knn=False))
    checks, unmatched = recheck(committed, rebuilt)
    differs = {(c.source, c.key) for c in checks if c.differs}
    assert differs == {
        ("metrics", "nait-code-r0.1-s0/seed0/metrics.json: nb_humaneval_bpb/bits_per_byte"),
        ("metrics", "knn-code-r0.1-s0/seed0/metrics.json: nb_gsm8k_bpb/bits_per_byte"),
        ("metrics", "knn-code-r0.1-s0/seed0/metrics.json: nb_humaneval_bpb/bits_per_byte"),
        ("comparison", "nait/code/0.1 nb_humaneval_bpb/bits_per_byte mean"),
        ("comparison", "nait/code/0.1 nb_humaneval_bpb/bits_per_byte values[0]"),
        ("comparison", "nait/code/0.1 nb_humaneval_bpb/bits_per_byte vs_random.difference"),
        ("comparison", "nait/code/0.1 nb_humaneval_bpb/bits_per_byte vs_random.rank"),
        ("page", "NAIT (code) / HumanEval bpb / mean"),
        ("page", "NAIT (code) / vs random (rank of 4) / vs_random.rank"),
        ("artefact", "select@nait-code-0.1 data/subsets/nait.jsonl")}
    # the page's -0.0020 is within 1e-4 plus half a printed unit of -0.00192
    page = {c.key: c for c in checks if c.source == "page"}
    assert not page["NAIT (code) / vs random (rank of 4) / vs_random.difference"].differs
    assert page["random, 3 subsets (mean, sd) / HumanEval bpb / sd"].rebuilt == pytest.approx(
        0.0017)
    assert [n.row for n in unmatched] == ["mystery method"]
    assert len(page) == 10      # base x2, random mean+sd x2, NAIT mean x2, diff, rank


def test_same_numbers_pass_and_nan_equals_nan(tmp_path):
    snap = snapshot_from_tree(_revision(tmp_path / "a", nait_code=0.5336))
    checks, _ = recheck(snap, snap)
    assert checks and not any(c.differs for c in checks)
    assert not Check("comparison", "sd", float("nan"), float("nan")).differs
    assert Check("comparison", "sd", float("nan"), 0.1).differs
    assert Check("metrics", "x", 0.5, None).differs


def test_page_tables_without_a_task_column_are_ignored():
    numbers = page_numbers(PAGE, ["nb_humaneval_bpb", "nb_gsm8k_bpb"])
    assert {n.column for n in numbers} == {"HumanEval bpb", "GSM8K bpb (transfer)",
                                           "vs random (rank of 4)"}
    nait = [n for n in numbers if n.row == "NAIT (code)"]
    assert [(n.field, n.value, n.decimals) for n in nait] == [
        ("mean", 0.5336, 4), ("vs_random.difference", -0.002, 4), ("vs_random.rank", 1.0, 0),
        ("mean", 0.6872, 4)]


SCREEN = """| task | arm | difference to random [95% interval, unadjusted] | Holm-adjusted p | \
verdict (Holm) | rank among random subsets | smallest detectable difference |
|---|---|---|---|---|---|---|
| HumanEval solutions, bits per byte (target) | NAIT (published recipe, code) | \
+0.0032 [-0.0010, +0.0074] | 0.216 | inside noise | 4 of 4 | 0.0056 |
"""


def _screen_row(**vs_random) -> dict:
    row = _row("nait/code/0.1", "nait", "nb_humaneval_bpb", [0.5243], "code",
               {"difference": 0.00321, "low": -0.00104, "high": 0.00736, "rank": 4,
                "detectable": 0.00561, **vs_random})
    return {**row, "task_title": "HumanEval solutions, bits per byte (target)",
            "arm_name": "NAIT (published recipe, code)", "family_p": 0.2157,
            "family_verdict": "inside noise"}


def test_the_first_screen_is_checked_number_by_number_and_by_verdict():
    """The report's first screen, copied onto a results page, is read by the arm's and the
    task's names as the report writes them; a number off by more than its last printed
    decimal, or another verdict, differs."""
    numbers = screen_numbers(SCREEN)
    assert [(n.field, n.value) for n in numbers] == [
        ("vs_random.difference", 0.0032), ("vs_random.low", -0.0010),
        ("vs_random.high", 0.0074), ("family_p", 0.216), ("vs_random.rank", 4.0),
        ("vs_random.detectable", 0.0056)]
    page = Snapshot(page=SCREEN)
    same = Snapshot(comparison={"rows": [_screen_row()]})
    checks, unmatched = page_checks(page, same)
    assert len(checks) == 7 and not unmatched and not any(c.differs for c in checks)
    moved = Snapshot(comparison={"rows": [{**_screen_row(difference=0.0041),
                                           "family_verdict": "worse"}]})
    differs = [c.key for c in page_checks(page, moved)[0] if c.differs]
    assert differs == [
        "NAIT (published recipe, code) / difference to random [95% interval, unadjusted] / "
        "vs_random.difference",
        "NAIT (published recipe, code) / HumanEval solutions, bits per byte (target) / "
        "verdict (Holm)"]
    other_arm = Snapshot(comparison={"rows": [{**_screen_row(), "arm_name": "RDS+ (code)"}]})
    checks, unmatched = page_checks(page, other_arm)
    assert len(unmatched) == 6 and [c.rebuilt for c in checks] == [None]


def test_a_header_names_the_task_whose_name_it_matches_best():
    tasks = ["nb_humaneval_bpb", "nb_humaneval_pass1", "nb_gsm8k_bpb"]
    assert header_task("HumanEval bpb", tasks) == "nb_humaneval_bpb"
    assert header_task("HumanEval pass@1", tasks) == "nb_humaneval_pass1"
    assert header_task("HumanEval", tasks) is None          # two tasks fit equally
    assert header_task("wall time", tasks) is None


def test_the_mirror_path_is_replaced_under_the_committed_data_root():
    params = {"paths": {"data_root": "../shared/data"}, "pool": {"local_path":
              "../shared/data/alpaca/a.json"}, "other": ["../shared/database", 3]}
    assert point_at_mirror(params, "../shared/data", "/m") == {
        "paths": {"data_root": "/m"}, "pool": {"local_path": "/m/alpaca/a.json"},
        "other": ["../shared/database", 3]}


def test_cli_compares_a_rebuilt_clone_with_the_commit_not_the_working_tree(tmp_path):
    repo = _revision(tmp_path / "repo", nait_code=0.53362)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "results"], check=True)
    metrics = repo / "data" / "scores" / "base" / "metrics.json"
    metrics.write_text(json.dumps({"nb_humaneval_bpb/bits_per_byte": 0.9}))   # uncommitted
    rebuilt = _revision(tmp_path / "clone", nait_code=0.53362)
    out = tmp_path / "recheck.md"
    assert main(["--repo", str(repo), "--rebuilt", str(rebuilt), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Differences beyond 0.0001: none." in text
    assert "| `data/scores/**/metrics.json` | 6 | 0 |" in text
    other = _revision(tmp_path / "clone2", nait_code=0.5339)
    assert main(["--repo", str(repo), "--rebuilt", str(other), "--out", str(out)]) == 1
    assert "| metrics | nait-code-r0.1-s0/seed0/metrics.json: nb_humaneval_bpb/bits_per_byte | " \
           "0.53362 | 0.5339 |" in out.read_text()


def test_the_rebuild_runs_the_makefiles_repro_path(tmp_path):
    """Two cells at once through the joblib launcher, the cores split, then dvc repro: the
    Makefile's `repro` recipe, whose words the scale command must match."""
    scale, repro = repro_commands(tmp_path, cells=2, cores=2)
    assert scale == [str(tmp_path / "python"), "-m", "naitbench.scale", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2", "scale.threads=1", "scale.chunk=2"]
    assert repro == [str(tmp_path / "dvc"), "repro"]
    recipe = (Path(__file__).parents[1] / "Makefile").read_text()
    for word in ("-m naitbench.scale", "hydra/launcher=joblib", "hydra.launcher.n_jobs=",
                 "scale.threads=", "scale.chunk=", "dvc repro"):
        assert word in recipe
    assert repro_commands(tmp_path, cells=1, cores=2)[0][-2:] == ["scale.threads=2",
                                                                  "scale.chunk=1"]
    assert repro_commands(tmp_path, cells=4, cores=2)[0][-2] == "scale.threads=1"
    with pytest.raises(ValueError, match="--cells 0"):
        repro_commands(tmp_path, cells=0, cores=2)


def test_the_cpu_kind_names_the_native_bf16_instructions(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 "
                    "avx512_bf16 amx_bf16\n")
    assert cpu_kind(info) == "Some Xeon; avx512_bf16, amx_bf16"
    info.write_text("cpu family\t: 26\nmodel\t\t: 2\nmodel name\t: Some EPYC\n"
                    "flags\t\t: fpu avx2\n")
    assert cpu_kind(info) == "Some EPYC (family 26, model 2); no native bf16"
    assert cpu_kind(tmp_path / "missing") == "CPU unknown"
