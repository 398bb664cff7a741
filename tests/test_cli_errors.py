"""A user's mistake ends every command the same way: its message in a line or two on stderr,
exit status 2, no traceback; NAITBENCH_TRACEBACK=1 shows the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from naitbench.cli import EXIT_USER_ERROR, TRACEBACK


def _run(module: str, *args: str, traceback: bool = False, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop(TRACEBACK, None)
    if traceback:
        env[TRACEBACK] = "1"
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _says(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) <= 2, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_bad_record_names_file_line_and_field(tmp_path, data_root, tiny_model_dir):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n"
                    + json.dumps({"instruction": "c", "input": ""}) + "\n")
    result = _run("naitbench.data.prepare", "profile=smoke", f"paths.data_root={data_root}",
                  f"paths.data_dir={tmp_path / 'data'}", f"pool.local_path={pool}",
                  f"model.dir={tiny_model_dir}",
                  "tracking=disabled", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null")
    _says(result, f"{pool}:2", "field 'output'")


def test_a_model_directory_not_prepared_says_which_stage_makes_it(tmp_path, data_root):
    result = _run("naitbench.data.prepare", "profile=smoke", f"paths.data_root={data_root}",
                  f"paths.data_dir={tmp_path / 'data'}", f"model.dir={tmp_path / 'nothing'}",
                  "tracking=disabled", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null")
    _says(result, f"model directory {tmp_path / 'nothing'} does not exist", "prepare_model")


@pytest.mark.parametrize(("module", "args", "fragments"), [
    ("naitbench.select", ["profile=smoke", "ratio=2"], ["ratio=2", "(0, 1]"]),
    ("naitbench.select", ["profile=smoke", "select.method=nope"],
     ["select.method='nope'", "nait"]),
    ("naitbench.select", ["profile=smoke", "selector=rds", "selector.rule=median"],
     ["rule='median'", "round_robin"]),
    ("naitbench.config", ["dump", "profile=smoke", "runs.targeted=[nope]"],
     ["runs.targeted names 'nope'"]),
    ("naitbench.models.prepare", ["model=hf", "model.name_or_path=./no/such/model"],
     ["model.name_or_path='./no/such/model': no such directory"]),
])
def test_a_bad_config_value_says_which_key_and_what_is_accepted(module, args, fragments,
                                                                tmp_path):
    extra = ([f"--output={tmp_path / 'params.yaml'}"] if module == "naitbench.config"
             else ["tracking=disabled", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null",
                   f"paths.data_dir={tmp_path / 'data'}"])
    _says(_run(module, *args, *extra), *fragments)


def test_the_cells_sweep_says_which_scale_key_is_wrong(tmp_path):
    """`python -m naitbench.scale` (what `make repro` runs) runs in Hydra's sweeper: the same
    two lines and status as every stage."""
    _says(_run("naitbench.scale", "scale.upstream=later", f"hydra.sweep.dir={tmp_path}"),
          "scale.upstream='later'", "'repro'")


def test_the_traceback_is_one_variable_away(tmp_path):
    result = _run("naitbench.select", "profile=smoke", "ratio=2", "tracking=disabled",
                  f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null", traceback=True)
    assert result.returncode != 0 and "Traceback" in result.stderr
