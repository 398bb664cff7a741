"""W&B tracking for every stage: config, metrics, costs and artefact hashes, offline by default.

Stages call this module; it imports none of them. One W&B run per stage execution:

- `job_type` is the DVC stage name (prepare_model, prepare_data, features, select, train,
  evaluate, report);
- `group` names what the run belongs to, built by `group_name(method, target, ratio, seed)`
  as "nait-code-r0.1-s0" (parts a stage does not have are left out: the features stage of
  NAIT is "nait", stages before selection are "pipeline"), so W&B's group view puts the
  select, train and evaluate runs of one subset side by side;
- `name` defaults to "<stage>:<group>".

Modes (conf/tracking/, `tracking.mode`): `offline` (the default) writes runs under
`<tracking.dir>/wandb/offline-run-*` and needs no API key; upload them later with
`wandb sync`. `online` logs to the W&B cloud. `disabled` makes every call a no-op and writes
nothing (wandb is not even imported). The config decides the mode; the WANDB_MODE
environment variable does not override it.

Closing a run (`Run.finish`, or leaving the `with` block) returns only once the offline run
file is complete on disk. wandb's own `finish()` returns earlier: the W&B service buffers the
file's last partial 32 KiB block in memory and writes it when it closes the run's stream,
which it does on its own time after `finish()` (the request that triggers it gets no reply).
A reader right after `finish()` could see the 7-byte header alone ("no run record") or a
record cut at a block boundary. So `Run.finish` waits until the file decodes in full and
ends with the run's exit record, the last record the service writes (`wait_for_run_file`).
`wandb.teardown()` would also wait, but it ends every other run of the process and restarts
the service for the next one.

`read_offline_run` decodes an offline run's `run-<id>.wandb` file without the cloud, so tests
(and users) can check what was logged. The file is in LevelDB's log format: a 7-byte header
(b":W&B", magic 0xBEE1 little-endian, version 0), then 32 KiB blocks of chunks, each with a
7-byte header (checksum uint32 LE, length uint16 LE, type: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST);
a block tail shorter than 7 bytes is padding; the reassembled payloads are
`wandb.proto.wandb_internal_pb2.Record` messages. LevelDB's documentation says the checksum is
CRC-32C, but wandb 0.31 writes the plain (IEEE, zlib) CRC-32 of the type byte and the payload,
unmasked; that is what is verified here.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from naitbench.errors import ConfigError
from naitbench.io import content_hash, file_hash

MODES = ("offline", "online", "disabled")
COMPARISON_KEY = "comparison"
_CHART_PARTS = ("target", "ratio", "task", "metric")
_sync_hint_shown: set[Path] = set()


@dataclass(frozen=True)
class TrackingSettings:
    """The `tracking` config group, checked."""

    mode: str
    project: str
    entity: str | None
    dir: Path

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> TrackingSettings:
        """Check `tracking.*` before any work starts; relative dirs are from the cwd."""
        mode = cfg.get("mode")
        if mode not in MODES:
            raise ConfigError(f"tracking.mode={mode!r}: use one of {', '.join(MODES)}")
        project = cfg.get("project")
        if not isinstance(project, str) or not project:
            raise ConfigError(f"tracking.project={project!r}: must be a non-empty string")
        return cls(mode=mode, project=project, entity=cfg.get("entity") or None,
                   dir=Path(str(cfg.get("dir") or ".")).expanduser().resolve())


def group_name(method: str | None = None, target: str | None = None,
               ratio: float | None = None, seed: int | str | None = None) -> str:
    """The W&B group of a run: "<method>-<target>-r<ratio>-s<seed>", absent parts left out."""
    parts = [str(method)] if method is not None else []
    if target is not None:
        parts.append(str(target))
    if ratio is not None:
        parts.append(f"r{ratio:g}")
    if seed is not None:
        parts.append(f"s{seed}")
    return "-".join(parts) or "pipeline"


def artefact_hash(path: str | Path) -> str:
    """Content hash of a file, or of a directory tree (relative paths and file hashes)."""
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    if not path.is_dir():
        raise FileNotFoundError(f"artefact {path} does not exist: cannot hash it")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return content_hash(*(f"{p.relative_to(path).as_posix()}:{file_hash(p)}" for p in files))


def _cell(value: Any) -> Any:
    """Table cells are scalars; anything else (an interval pair, a dict) becomes JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _table_columns(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[str] | None) -> tuple[list[str], list[list[Any]]]:
    """Columns (given, or the union of the rows' keys in first-seen order) and cell rows."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        raise ValueError("a table needs columns: pass rows or `columns`")
    return list(columns), [[_cell(row.get(col)) for col in columns] for row in rows]


class Run:
    """One stage's W&B run. Use as a context manager; when disabled every method is a no-op."""

    def __init__(self, wandb_run: Any, settings: TrackingSettings) -> None:
        self._run = wandb_run
        self.settings = settings
        self._started = time.monotonic()
        self._finished = False

    @property
    def enabled(self) -> bool:
        """False in disabled mode (nothing is logged or written)."""
        return self._run is not None

    @property
    def wandb_run(self) -> Any:
        """The underlying wandb run, for what this API does not cover (None if disabled)."""
        return self._run

    @property
    def path(self) -> Path | None:
        """The run's local folder (offline: the folder `wandb sync` takes); None if disabled."""
        return Path(self._run.dir).parent if self._run is not None else None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """One history row (numbers or wandb objects); steps must not go backwards."""
        if self._run is not None:
            self._run.log(dict(metrics), step=step)

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (e.g. scores); later calls overwrite the same keys."""
        if self._run is not None:
            self._run.summary.update(dict(values))

    def log_costs(self, *, wall_time_s: float | None = None, forward_tokens: int = 0,
                  backward_tokens: int = 0, **extra: float) -> None:
        """Costs as summary keys "cost/<name>"; wall time defaults to the time since start."""
        if self._run is None:
            return
        wall = time.monotonic() - self._started if wall_time_s is None else wall_time_s
        costs = {"wall_time_s": float(wall), "forward_tokens": int(forward_tokens),
                 "backward_tokens": int(backward_tokens), **extra}
        self.log_summary({f"cost/{name}": value for name, value in costs.items()})

    def log_artefacts(self, paths: Mapping[str, str | Path]) -> None:
        """Content hashes of output files or directories as summary keys "artefact/<name>"."""
        if self._run is not None:
            self.log_summary({f"artefact/{name}": artefact_hash(path)
                              for name, path in paths.items()})

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]],
                  columns: Sequence[str] | None = None) -> None:
        """A wandb.Table (one history step); values of one column must share a type."""
        if self._run is not None:
            self._run.log({key: _wandb_table(rows, columns)})

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (a non-zero exit code marks it failed); safe to call twice.

        Offline, it returns once the run file is complete (see the module doc).
        """
        if self._run is not None and not self._finished:
            self._finished = True
            run_file = Path(self._run.settings.sync_file)
            self._run.finish(exit_code=exit_code)
            if self.settings.mode == "offline":
                wait_for_run_file(run_file)
                _print_sync_hint(self.settings.dir)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def _wandb_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Any:
    import wandb

    cols, data = _table_columns(rows, columns)
    return wandb.Table(columns=cols, data=data)


def _print_sync_hint(root: Path) -> None:
    """Once per process and directory: where the offline runs are and how to upload them."""
    if root in _sync_hint_shown:
        return
    _sync_hint_shown.add(root)
    runs = root / "wandb"
    print(f"[naitbench.tracking] W&B is offline: runs are saved under {runs}. Upload them with "
          f"`wandb login` and then `wandb sync {runs}/offline-run-*` (or `wandb sync "
          f"--sync-all` in {root}).", file=sys.stderr)


def start_run(tracking_cfg: Mapping[str, Any], *, stage: str, config: Mapping[str, Any],
              group: str, name: str | None = None, tags: Sequence[str] = ()) -> Run:
    """Start the W&B run of one stage execution (see the module doc for grouping and modes)."""
    settings = TrackingSettings.from_cfg(tracking_cfg)
    if settings.mode == "disabled" or os.environ.get("RANK", "0") != "0":
        return Run(None, settings)   # under torch.distributed only rank 0 logs
    import wandb

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    settings.dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=settings.project, entity=settings.entity, dir=str(settings.dir),
                     mode=settings.mode, job_type=stage, group=group,
                     name=name or f"{stage}:{group}", tags=list(tags), config=dict(config))
    return Run(run, settings)


def _chart_title(key: tuple) -> str:
    return " ".join(f"{part}={value}" for part, value in zip(_CHART_PARTS, key, strict=True)
                    if value is not None)


def log_comparison(tracking_cfg: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                   figures: Mapping[str, str | Path], *, config: Mapping[str, Any] | None = None,
                   title: str = "NAIT-Bench comparison") -> str | None:
    """The report stage's W&B comparison; returns the W&B Report's URL when one was built.

    Logs, in one run (job_type "report", group "report"): the table `comparison` (one row per
    method x target x ratio x task x metric: mean, interval, rank, cost, ...), one bar chart of
    `mean` by `method` per target/ratio/task/metric ("chart/..."), and each figure image
    ("figure/<name>"). Online with WANDB_API_KEY set, it also builds a W&B Report of them
    through the reports API (package wandb-workspaces).
    """
    settings = TrackingSettings.from_cfg(tracking_cfg)
    missing = [str(path) for path in figures.values() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"figures to log do not exist: {', '.join(missing)}")
    if any("method" not in row or "mean" not in row for row in rows):
        raise ValueError("every comparison row needs 'method' and 'mean' (the bar charts' "
                         "label and value)")
    with start_run(tracking_cfg, stage="report", config=config or {}, group="report",
                   name=title) as run:
        if not run.enabled:
            return None
        import wandb

        charts: dict[tuple, list[Mapping[str, Any]]] = {}
        for row in rows:
            charts.setdefault(tuple(row.get(part) for part in _CHART_PARTS), []).append(row)
        payload: dict[str, Any] = {COMPARISON_KEY: _wandb_table(rows)}
        chart_titles = {}
        for key, chart_rows in charts.items():
            chart_key = "chart/" + "-".join(str(v) for v in key if v is not None)
            chart_titles[chart_key] = _chart_title(key)
            table = _wandb_table(chart_rows, ["method", "mean"])
            payload[chart_key] = wandb.plot.bar(table, "method", "mean",
                                                title=chart_titles[chart_key])
        for fig_name, path in figures.items():
            payload[f"figure/{fig_name}"] = wandb.Image(str(path))
        run.log_metrics(payload)
        if settings.mode != "online":
            print(f"[naitbench.tracking] comparison table, charts and figures logged to the "
                  f"offline run {run.path}. A W&B Report is built only online: after `wandb "
                  f"sync`, re-run the report stage with tracking=online and WANDB_API_KEY set.",
                  file=sys.stderr)
            return None
        if not os.environ.get("WANDB_API_KEY"):
            print("[naitbench.tracking] WANDB_API_KEY is not set: skipping the W&B Report; the "
                  f"comparison is in run {run.wandb_run.url}.", file=sys.stderr)
            return None
        try:
            import wandb_workspaces.reports.v2  # noqa: F401
        except ImportError:
            print("[naitbench.tracking] the package wandb-workspaces is not installed "
                  "(`pip install wandb-workspaces`): skipping the W&B Report; the comparison "
                  f"is in run {run.wandb_run.url}.", file=sys.stderr)
            return None
        report = build_report(settings.entity or run.wandb_run.entity, settings.project,
                              run.wandb_run.id, chart_titles,
                              [f"figure/{fig_name}" for fig_name in figures], title=title)
        report.save()
        print(f"[naitbench.tracking] W&B Report: {report.url}", file=sys.stderr)
        return report.url


def build_report(entity: str, project: str, run_id: str, charts: Mapping[str, str],
                 figure_keys: Sequence[str], title: str = "NAIT-Bench comparison") -> Any:
    """The W&B Report (not yet saved) over the comparison run `run_id` and the stage runs.

    `charts` maps each bar chart's key to its title. Needs wandb-workspaces; building the
    object needs no network, `save()` does.
    """
    import wandb_workspaces.reports.v2 as wr

    this_run = wr.Runset(entity=entity, project=project, name="comparison",
                         filters=f"ID = '{run_id}'")
    panels = [wr.WeavePanelSummaryTable(table_name=COMPARISON_KEY)]
    panels += [wr.CustomChart(query={"summaryTable": {"tableKey": f"{key}_table"}},
                              chart_name="wandb/bar/v0",
                              chart_fields={"label": "method", "value": "mean"},
                              chart_strings={"title": chart_title})
               for key, chart_title in charts.items()]
    if figure_keys:
        panels.append(wr.MediaBrowser(title="figures", media_keys=list(figure_keys)))
    stage_runs = wr.Runset(entity=entity, project=project, name="stage runs by group",
                           groupby=["group"])
    return wr.Report(
        entity=entity, project=project, title=title,
        description="Selection methods compared with seed-level statistics (built by "
                    "naitbench.tracking.log_comparison from the report stage).",
        blocks=[
            wr.H1("Comparison"),
            wr.P("Per method, target, ratio and task: the mean score over seeds, its paired "
                 "interval against random, the rank among the random subsets and the "
                 "selection cost. The local HTML report states when a difference is inside "
                 "seed noise."),
            wr.PanelGrid(runsets=[this_run], panels=panels),
            wr.H2("Stage runs"),
            wr.P("Every stage's run, grouped by method-target-ratio-seed."),
            wr.PanelGrid(runsets=[stage_runs]),
        ])


# --- reading offline run files ----------------------------------------------------------------

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_IDENT, _MAGIC, _VERSION = b":W&B", 0xBEE1, 0
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
RUN_FILE_TIMEOUT_S = 120.0


class OfflineRunError(ValueError):
    """A .wandb file that cannot be read: the message says where and why."""


def _run_file(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_file():
        return path
    files = sorted(path.glob("run-*.wandb")) if path.is_dir() else []
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise OfflineRunError(f"{path}: expected one run-<id>.wandb file, found {found}")
    return files[0]


def _chunks(data: bytes, path: Path) -> Iterator[bytes]:
    """Reassembled record payloads, checksums verified."""
    if len(data) < _FILE_HEADER.size:
        raise OfflineRunError(f"{path}: {len(data)} bytes, too short to be a W&B run file")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise OfflineRunError(f"{path}: not a W&B run file (header {data[:7]!r})")
    if version != _VERSION:
        raise OfflineRunError(f"{path}: unsupported W&B run file version {version}")
    pos, pending = _FILE_HEADER.size, None
    while pos < len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER.size:
            pos += left
            continue
        if len(data) - pos < _CHUNK_HEADER.size:
            raise OfflineRunError(f"{path}: truncated: incomplete chunk header at byte {pos}")
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        start, end = pos + _CHUNK_HEADER.size, pos + _CHUNK_HEADER.size + length
        if end > len(data):
            raise OfflineRunError(f"{path}: truncated: chunk at byte {pos} needs {length} "
                                  f"bytes, the file ends after {len(data) - start}")
        if length > left - _CHUNK_HEADER.size:
            raise OfflineRunError(f"{path}: corrupted: chunk at byte {pos} crosses a block")
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise OfflineRunError(f"{path}: corrupted: checksum mismatch in chunk at byte {pos}")
        pos = end
        if kind == _FULL and pending is None:
            yield payload
        elif kind == _FIRST and pending is None:
            pending = [payload]
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending.append(payload)
            if kind == _LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise OfflineRunError(f"{path}: corrupted: unexpected chunk type {kind} at byte "
                                  f"{pos - length - _CHUNK_HEADER.size}")
    if pending is not None:
        raise OfflineRunError(f"{path}: truncated: the last record is incomplete")


def wait_for_run_file(run_dir: str | Path, timeout_s: float = RUN_FILE_TIMEOUT_S) -> Path:
    """Block until the W&B service has written an offline run file in full; returns its path.

    Complete means: every chunk is there with a valid checksum and the last record is the
    exit record (wandb writes nothing after it, and before closing the file it writes only
    whole 32 KiB blocks, so the exit record's last chunk on disk means the file is closed).
    A file still incomplete after `timeout_s` (the service died, or the file is damaged)
    raises OfflineRunError saying why.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            path = _run_file(run_dir)
            tail = deque(_chunks(path.read_bytes(), path), maxlen=1)
            last = wandb_internal_pb2.Record()
            last.ParseFromString(tail[0] if tail else b"")
            if last.WhichOneof("record_type") == "exit":
                return path
            problem = "no exit record yet"
        except (OfflineRunError, OSError, DecodeError) as err:
            problem = str(err)
        if time.monotonic() >= deadline:
            raise OfflineRunError(f"{run_dir}: the W&B run file is still incomplete after "
                                  f"{timeout_s:g} s ({problem})")
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def read_records(run_dir: str | Path) -> list[Any]:
    """Every `wandb_internal_pb2.Record` of an offline run (folder or .wandb file)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    path = _run_file(run_dir)
    records = []
    for index, payload in enumerate(_chunks(path.read_bytes(), path)):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError as err:
            raise OfflineRunError(f"{path}: record {index} is not a W&B record: {err}") from err
        records.append(record)
    return records


def _item_path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _apply(target: dict, items: Any, remove: Any = ()) -> None:
    """Apply update items (JSON values at nested keys) and removals to a dict."""
    for item in items:
        *parents, leaf = _item_path(item)
        node = target
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(item.value_json)
    for item in remove:
        *parents, leaf = _item_path(item)
        node = target
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """What an offline run logged, decoded from its .wandb file (no cloud, no API key).

    Returns run_id, project, entity, name, group, job_type, tags, git_commit (of the working
    directory's repository, None outside one), config, history (one dict
    per step, with `_step`), summary, tables (each logged wandb.Table as {"columns", "data"},
    read from the run's files/), charts (custom chart settings by key) and exit_code (None if
    the run did not finish). Keys that wandb adds itself (starting with "_") are dropped,
    except `_step` in history rows.
    """
    path = _run_file(run_dir)
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(run_id=run.run_id, project=run.project, entity=run.entity or None,
                       name=run.display_name, group=run.run_group, job_type=run.job_type,
                       tags=list(run.tags), git_commit=run.git.commit or None)
            _apply(out["config"], run.config.update)
            _apply(out["summary"], run.summary.update)
        elif kind == "config":
            _apply(out["config"], record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(out["summary"], record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            _apply(row, record.history.item)
            out["history"].append({k: v for k, v in row.items()
                                   if k == "_step" or not k.startswith("_")})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    if "run_id" not in out:
        raise OfflineRunError(f"{path}: no run record: not a complete W&B run file")
    internal = out["config"].pop("_wandb", {})
    out["config"] = {k: v for k, v in out["config"].items() if not k.startswith("_")}
    out["charts"] = {key: value.get("panel_config", {}).get("fieldSettings", {})
                     for key, value in internal.get("visualize", {}).items()}
    out["summary"] = {k: v for k, v in out["summary"].items() if not k.startswith("_")}
    out["tables"] = {key: json.loads((path.parent / "files" / value["path"]).read_text())
                     for key, value in out["summary"].items()
                     if isinstance(value, dict) and value.get("_type") == "table-file"}
    return out
