"""The training probe and the choice of cells at once (naitbench.machine), measured for real on
this machine with a small model of the probe's shape; and the estimate reading what was
measured."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.estimate import TRAIN, plan
from naitbench.machine import MIN_GAIN, cells_at_once, main, read_machine_file, train_probe

SMALL = ("estimate.probe_block={hidden: 64, mlp: 128, heads: 4, kv_heads: 2, tokens: 256, "
         "layers: 2, vocab: 512}")


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    OmegaConf.save(compose(["profile=smoke", SMALL, "train.precision=fp32"]), path, resolve=True)
    return path


def test_the_probe_trains_lora_steps_of_the_configured_shape():
    shape = {"hidden": 64, "mlp": 128, "heads": 4, "kv_heads": 2, "layers": 2, "vocab": 512}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "down_proj"]}
    assert train_probe(shape, lora, "fp32", batch=2, length=32, steps=2) > 0


def test_two_cells_are_chosen_only_where_they_measured_faster(params):
    record = cells_at_once(params, cores=2)
    assert record["alone_tok_s"] > 0 and len(record["together_tok_s"]) == 2
    assert record["gain"] == pytest.approx(sum(record["together_tok_s"]) / record["alone_tok_s"],
                                           rel=1e-2)   # from the rates before rounding
    assert record["cells"] == (2 if record["gain"] >= MIN_GAIN else 1)
    one_core = cells_at_once(params, cores=1)
    assert one_core["cells"] == 1 and one_core["gain"] is None


def test_the_measurement_is_written_for_this_host_only(params, tmp_path, capsys):
    out = tmp_path / "machine.json"
    assert main(["cells", "--params", str(params), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    record = read_machine_file(out)
    assert record is not None and printed.out.strip() == str(record["cells"])
    assert "training probe: one cell" in printed.err
    out.write_text(json.dumps({**record, "host": f"not-{os.uname().nodename}"}))
    assert read_machine_file(out) is None
    assert read_machine_file(tmp_path / "absent.json") is None


def test_the_estimate_trains_at_the_measured_rate_and_gain():
    cfg = compose(["profile=embedded"])
    record = {"alone_tok_s": 240.0, "gain": 1.5, "precision": str(cfg.train.precision)}
    here = plan(cfg, machine_record=record)
    assert here.speed[TRAIN] == pytest.approx(
        240.0 * cfg.estimate.train_probe_efficiency / cfg.estimate.train_tok_s)
    assert here.train_cells_gain == 1.5
    other = plan(cfg, machine_record={**record, "precision": "something-else"})
    assert other.train_cells_gain is None   # measured for another precision: probed again
