"""W&B tracking with the real wandb in offline mode: what a stage logs is read back from the
offline run file; disabled mode writes nothing; damaged run files give clear errors."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from naitbench.config import ConfigError, compose
from naitbench.io import file_hash
from naitbench.tracking import (
    OfflineRunError,
    artefact_hash,
    build_report,
    group_name,
    log_comparison,
    read_offline_run,
    read_records,
    start_run,
    wait_for_run_file,
)

LONG_TEXT = "abcdefghij" * 8000  # 80 KB: the record spans three 32 KiB blocks


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory):
    """Keep wandb's own cache, config and staging files out of the user's home."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            patch.setenv(var, str(home / var.lower()))
        patch.setenv("WANDB_MODE", "offline")
        yield


def tracking(root: Path, mode: str = "offline") -> dict:
    return {"mode": mode, "project": "naitbench-test", "entity": None, "dir": str(root)}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """A stage's outputs: one file and one directory."""
    root = tmp_path_factory.mktemp("outputs")
    (root / "subset.jsonl").write_text('{"id": "a"}\n')
    (root / "model" / "sub").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    (root / "model" / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    return {"subset": root / "subset.jsonl", "model": root / "model"}


CONFIG = {"seed": 0, "ratio": 0.1, "selector": {"name": "nait", "layers": [10, 20]},
          "long": LONG_TEXT}
ROWS = [{"id": "a", "score": 0.5, "rank": 1}, {"id": "b", "score": 0.25, "rank": 2}]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, outputs):
    """One offline run through the API, shared by the assertions below."""
    root = tmp_path_factory.mktemp("tracking")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), start_run(
            tracking(root), stage="select", config=CONFIG,
            group=group_name("nait", "code", 0.1, 0), tags=["nait", "code"]) as run:
        for step, loss in enumerate([2.0, 1.5, 1.25]):
            run.log_metrics({"train/loss": loss, "train/lr": 1e-4 / (step + 1)}, step=step)
        run.log_costs(wall_time_s=12.5, forward_tokens=4096, backward_tokens=1024,
                      peak_memory_mb=310.0)
        run.log_artefacts(outputs)
        run.log_table("subset", ROWS)
        run.log_summary({"n_selected": 2, "score_mean": 0.375})
    return {"root": root, "run": run, "read": read_offline_run(run.path),
            "stderr": stderr.getvalue()}


def test_config_and_run_metadata_round_trip(logged):
    got = logged["read"]
    assert got["config"] == CONFIG
    assert got["group"] == "nait-code-r0.1-s0"
    assert got["job_type"] == "select"
    assert got["name"] == "select:nait-code-r0.1-s0"
    assert got["tags"] == ["nait", "code"]
    assert got["project"] == "naitbench-test"
    assert got["run_id"] == logged["run"].wandb_run.id
    assert got["exit_code"] == 0
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    assert got["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)


def test_history_summary_costs_and_tables_round_trip(logged):
    got = logged["read"]
    metrics = [{k: row[k] for k in ("_step", "train/loss", "train/lr")}
               for row in got["history"]]
    assert metrics == [{"_step": 0, "train/loss": 2.0, "train/lr": 1e-4},
                       {"_step": 1, "train/loss": 1.5, "train/lr": 5e-5},
                       {"_step": 2, "train/loss": 1.25, "train/lr": 1e-4 / 3}]
    summary = got["summary"]
    assert summary["n_selected"] == 2 and summary["score_mean"] == 0.375
    assert summary["train/loss"] == 1.25
    assert {k: v for k, v in summary.items() if k.startswith("cost/")} == {
        "cost/wall_time_s": 12.5, "cost/forward_tokens": 4096, "cost/backward_tokens": 1024,
        "cost/peak_memory_mb": 310.0}
    assert got["tables"]["subset"] == {"columns": ["id", "score", "rank"],
                                       "data": [["a", 0.5, 1], ["b", 0.25, 2]]}


def test_artefact_hashes_round_trip(logged, outputs):
    summary = logged["read"]["summary"]
    assert summary["artefact/subset"] == file_hash(outputs["subset"])
    assert summary["artefact/model"] == artefact_hash(outputs["model"])


def test_offline_run_prints_how_to_sync_once(logged):
    runs = logged["root"].resolve() / "wandb"
    assert logged["run"].path.parent == runs
    assert logged["stderr"].count(f"wandb sync {runs}/offline-run-*") == 1


def test_directory_hash_follows_content_and_names(tmp_path, outputs):
    copy = tmp_path / "copy"
    shutil.copytree(outputs["model"], copy)
    assert artefact_hash(copy) == artefact_hash(outputs["model"])
    (copy / "sub" / "weights.bin").write_bytes(b"\x00\x02" * 100)
    changed = artefact_hash(copy)
    assert changed != artefact_hash(outputs["model"])
    (copy / "sub" / "weights.bin").rename(copy / "sub" / "other.bin")
    assert artefact_hash(copy) != changed
    with pytest.raises(FileNotFoundError, match="does not exist"):
        artefact_hash(tmp_path / "missing")


def test_group_names():
    assert group_name("nait", "code", 0.1, 0) == "nait-code-r0.1-s0"
    assert group_name("random", "math", 0.05, "2") == "random-math-r0.05-s2"
    assert group_name("nait") == "nait"
    assert group_name() == "pipeline"


def test_failed_stage_is_marked_failed_with_default_name(tmp_path):
    with pytest.raises(RuntimeError, match="stage broke"), start_run(
            tracking(tmp_path), stage="prepare_data", config={}, group=group_name()) as run:
        run.log_metrics({"records": 3})
        raise RuntimeError("stage broke")
    got = read_offline_run(run.path)
    assert got["exit_code"] == 1
    assert (got["name"], got["group"], got["job_type"]) == (
        "prepare_data:pipeline", "pipeline", "prepare_data")
    assert got["history"] == [{"_step": 0, "records": 3}]


def test_disabled_mode_writes_nothing(tmp_path, outputs):
    root = tmp_path / "runs"
    cfg = tracking(root, mode="disabled")
    with start_run(cfg, stage="train", config=CONFIG, group="g") as run:
        run.log_metrics({"loss": 1.0}, step=0)
        run.log_costs(forward_tokens=10)
        run.log_artefacts({"missing": tmp_path / "not-hashed"})
        run.log_table("t", ROWS)
        run.log_summary({"x": 1})
    assert not run.enabled and run.path is None and run.wandb_run is None
    figure = tmp_path / "f.png"
    figure.write_bytes(b"")
    assert log_comparison(cfg, [{"method": "nait", "mean": 0.5}], {"f": figure}) is None
    assert not root.exists()


def test_tracking_config_group():
    assert compose([]).tracking.mode == "offline"
    for mode in ("online", "disabled"):
        cfg = compose([f"tracking={mode}"]).tracking
        assert cfg.mode == mode and cfg.project == "naitbench" and cfg.dir == "."
    with pytest.raises(ConfigError, match=r"tracking\.mode='cloud'"):
        start_run({"mode": "cloud", "project": "p"}, stage="s", config={}, group="g")
    with pytest.raises(ConfigError, match=r"tracking\.project"):
        start_run({"mode": "offline", "project": ""}, stage="s", config={}, group="g")


@pytest.fixture
def run_file(logged, tmp_path) -> Path:
    """A copy of the shared run's .wandb file, free to damage."""
    (source,) = logged["run"].path.glob("run-*.wandb")
    assert source.stat().st_size > 2 * 32768, "the long config should span several blocks"
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    return target


def test_corrupted_run_file_is_a_clear_error(run_file):
    data = bytearray(run_file.read_bytes())
    data[40000] ^= 0xFF
    run_file.write_bytes(bytes(data))
    with pytest.raises(OfflineRunError, match="checksum mismatch in chunk at byte"):
        read_offline_run(run_file)


def test_truncated_run_file_is_a_clear_error(run_file):
    data = run_file.read_bytes()
    run_file.write_bytes(data[:40000])
    with pytest.raises(OfflineRunError, match="truncated"):
        read_offline_run(run_file)
    run_file.write_bytes(data[:5])
    with pytest.raises(OfflineRunError, match="too short"):
        read_offline_run(run_file)


def test_not_a_run_file_is_a_clear_error(run_file, tmp_path):
    run_file.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(OfflineRunError, match="not a W&B run file"):
        read_offline_run(run_file)
    with pytest.raises(OfflineRunError, match=r"expected one run-<id>\.wandb file, found none"):
        read_offline_run(tmp_path / "empty")


@pytest.mark.parametrize("flushed", [7, 2 * 32768], ids=["header", "two-blocks"])
def test_finish_waits_for_the_service_to_write_the_run_file(run_file, tmp_path, flushed):
    """What a reader found right after wandb's finish() (the service writes the file's header
    and whole 32 KiB blocks, and the rest when it closes the run a moment later): the wait
    returns only once the rest is there."""
    data = run_file.read_bytes()
    growing = tmp_path / "offline-run" / run_file.name
    growing.parent.mkdir()
    growing.write_bytes(data[:flushed])
    with pytest.raises(OfflineRunError, match="no run record" if flushed == 7 else "truncated"):
        read_offline_run(growing)

    def close_the_file() -> None:
        with growing.open("ab") as out:
            out.write(data[flushed:])

    closer = threading.Timer(0.2, close_the_file)
    closer.start()
    assert wait_for_run_file(growing.parent) == growing
    assert growing.read_bytes() == data
    closer.join()
    assert read_records(growing)[-1].exit.exit_code == 0


def test_run_file_that_never_completes_is_a_clear_error(run_file):
    run_file.write_bytes(run_file.read_bytes()[:2 * 32768])
    with pytest.raises(OfflineRunError, match=r"still incomplete after 0\.1 s \(.*truncated"):
        wait_for_run_file(run_file, timeout_s=0.1)


@pytest.fixture(scope="module")
def figure(tmp_path_factory) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path_factory.mktemp("figures") / "scores.png"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(["nait", "random"], [0.64, 0.68])
    fig.savefig(path)
    plt.close(fig)
    return path


COMPARISON = [
    {"method": "nait", "target": "code", "ratio": 0.1, "task": "humaneval", "metric": "bpb",
     "mean": 0.639, "interval": [-0.05, -0.02], "rank": 1, "wall_time_s": 95.0},
    {"method": "random", "target": "code", "ratio": 0.1, "task": "humaneval", "metric": "bpb",
     "mean": 0.676, "interval": None, "rank": None, "wall_time_s": 0.1},
    {"method": "nait", "target": "code", "ratio": 0.1, "task": "gsm8k", "metric": "bpb",
     "mean": 0.840, "interval": [-0.02, 0.01], "rank": 2, "wall_time_s": 95.0},
]


def test_comparison_is_logged_offline(tmp_path, figure):
    root = tmp_path / "runs"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        url = log_comparison(tracking(root), COMPARISON, {"scores": figure},
                             config={"profile_name": "smoke"})
    assert url is None
    assert "W&B Report is built only online" in stderr.getvalue()
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    got = read_offline_run(run_dir)
    assert (got["job_type"], got["group"]) == ("report", "report")
    assert got["config"] == {"profile_name": "smoke"}
    table = got["tables"]["comparison"]
    assert table["columns"] == list(COMPARISON[0])
    assert table["data"][0] == ["nait", "code", 0.1, "humaneval", "bpb", 0.639,
                                "[-0.05, -0.02]", 1, 95.0]
    assert [row[0] for row in table["data"]] == ["nait", "random", "nait"]
    assert got["charts"] == {
        "chart/code-0.1-humaneval-bpb": {"label": "method", "value": "mean"},
        "chart/code-0.1-gsm8k-bpb": {"label": "method", "value": "mean"}}
    assert got["tables"]["chart/code-0.1-humaneval-bpb_table"] == {
        "columns": ["method", "mean"], "data": [["nait", 0.639], ["random", 0.676]]}
    image = got["summary"]["figure/scores"]
    assert image["_type"] == "image-file"
    assert (run_dir / "files" / image["path"]).read_bytes() == figure.read_bytes()


def test_comparison_rejects_bad_input_before_logging(tmp_path, figure):
    root = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="figures to log do not exist"):
        log_comparison(tracking(root), COMPARISON, {"x": tmp_path / "none.png"})
    with pytest.raises(ValueError, match="'method' and 'mean'"):
        log_comparison(tracking(root), [{"method": "nait"}], {"scores": figure})
    assert not root.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic v1 validators inside
def test_w_and_b_report_is_built_from_the_comparison():
    """Building the Report object needs no network (saving it does, so it is not tested)."""
    report = build_report("team", "naitbench", "abc123",
                          {"chart/code-0.1-humaneval-bpb": "target=code ratio=0.1"},
                          ["figure/scores"])
    assert (report.entity, report.project, report.title) == (
        "team", "naitbench", "NAIT-Bench comparison")
    grid = report.blocks[2]
    assert grid.runsets[0].filters == "ID = 'abc123'"
    table, chart, media = grid.panels
    assert table.table_name == "comparison"
    assert chart.query == {"summaryTable": {"tableKey": "chart/code-0.1-humaneval-bpb_table"}}
    assert chart.chart_strings == {"title": "target=code ratio=0.1"}
    assert media.media_keys == ["figure/scores"]
    assert report.blocks[-1].runsets[0].groupby == ["group"]
