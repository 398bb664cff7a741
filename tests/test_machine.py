"""The training probe and the choice of cells at once (naitbench.machine), measured for real on
this machine with a small model of the probe's shape; and the estimate reading what was
measured."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.estimate import EVALUATE, TRAIN, plan
from naitbench.machine import (
    MIN_GAIN,
    cells_at_once,
    main,
    probe_settings,
    read_machine_file,
    score_probe,
    train_probe,
)

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
    assert score_probe(shape, lora, "fp32", batch=2, length=32, steps=2) > 0


def test_each_probe_takes_its_stage_precision_and_batch():
    cfg = compose(["profile=smoke", SMALL, "train.precision=bf16", "train.batch_size=3",
                   "eval.batch_size=5", "eval.dtype=auto"])
    train, score = probe_settings(cfg, "train"), probe_settings(cfg, "score")
    assert (train["precision"], train["batch"]) == ("bf16", 3)
    assert (score["precision"], score["batch"]) == ("fp32", 5)   # CPU scoring stays fp32
    assert probe_settings(compose(["profile=smoke", "eval.dtype=bfloat16"]),
                          "score")["precision"] == "bf16"
    with pytest.raises(ValueError, match="probe kind 'select'"):
        probe_settings(cfg, "select")


def test_two_cells_are_chosen_only_where_they_measured_faster(params):
    record = cells_at_once(params, cores=2, repeats=2)
    for kind in ("train", "score"):
        measured, readings = record[kind], record[kind]["readings"]
        assert len(readings["alone"]) == 2 and len(readings["together"]) == 2
        assert measured["alone_tok_s"] == pytest.approx(sum(readings["alone"]) / 2, abs=0.1)
        assert measured["together_tok_s"] == pytest.approx(
            [sum(r[i] for r in readings["together"]) / 2 for i in range(2)], abs=0.1)
        assert measured["gain"] == pytest.approx(
            sum(measured["together_tok_s"]) / measured["alone_tok_s"],
            rel=1e-2)   # from the rates before rounding
    assert record["cells"] == (2 if record["train"]["gain"] >= MIN_GAIN else 1)
    one_core = cells_at_once(params, cores=1, repeats=1)
    assert one_core["cells"] == 1
    assert one_core["train"]["gain"] is None and one_core["score"]["gain"] is None
    with pytest.raises(ValueError, match="repeats=0"):
        cells_at_once(params, repeats=0)


def test_the_measurement_is_written_for_this_host_only(params, tmp_path, capsys):
    out = tmp_path / "machine.json"
    assert main(["cells", "--params", str(params), "--out", str(out), "--repeats", "1"]) == 0
    printed = capsys.readouterr()
    record = read_machine_file(out)
    assert record is not None and printed.out.strip() == str(record["cells"])
    assert "training probe: one cell" in printed.err and "scoring probe: one cell" in printed.err
    out.write_text(json.dumps({**record, "host": f"not-{os.uname().nodename}"}))
    assert read_machine_file(out) is None
    older = {k: v for k, v in record.items() if k != "score"}   # written before scoring's probe
    out.write_text(json.dumps(older))
    assert read_machine_file(out) is None
    assert read_machine_file(tmp_path / "absent.json") is None


def test_the_estimate_trains_at_the_measured_rate_and_gain():
    cfg = compose(["profile=embedded"])
    record = {"train": {"alone_tok_s": 240.0, "gain": 1.5},
              "score": {"alone_tok_s": 900.0, "gain": 1.3},
              "precision": str(cfg.train.precision)}
    here = plan(cfg, machine_record=record)
    assert here.speed[TRAIN] == pytest.approx(
        240.0 * cfg.estimate.train_probe_efficiency / cfg.estimate.train_tok_s)
    assert here.cells_gains == {TRAIN: 1.5, EVALUATE: 1.3}
    other = plan(cfg, machine_record={**record, "precision": "something-else"})
    assert other.cells_gains == {}   # measured for another precision: probed again
