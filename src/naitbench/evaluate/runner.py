"""Scoring one model with lm-evaluation-harness on the repo's task pack.

The task YAMLs (`tasks/`) are the readable source: one file per task, named like the task.
Their `data_files` are written relative to the default data directory (`data/...`, so the
lm-eval CLI works from the repo root with `--include_path src/naitbench/evaluate/tasks`);
at run time that prefix is replaced with the run's data directory and the configs go to
`lm_eval.simple_evaluate` as dicts.

Outputs (in `out_dir`):
  results.json   lm-eval's full results (configs, versions, n-shot, ...), without samples
                 and the run date (same config -> same bytes)
  metrics.json   {"<task>/<metric>": value} (lm-eval's aggregate, e.g. bits per byte)
  samples.jsonl  one row per task and item: task, doc_id, id (the held-out record id),
                 metric, value, higher_is_better (+ loglikelihood and bytes for bits per
                 byte, the model's output for generative tasks), sorted by task and doc_id

Tasks run one at a time on one loaded model; with a `resume_dir`, each finished task's
results are kept there, so an interrupted evaluation re-runs only the unfinished tasks
(a kept result counts only for the same task config, model files and settings).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from naitbench.io import content_hash, write_json, write_jsonl

TASK_DIR = Path(__file__).resolve().parent / "tasks"
DATA_PREFIX = Path("data")
RESULTS_FILE, METRICS_FILE, SAMPLES_FILE = "results.json", "metrics.json", "samples.jsonl"
VOLATILE_KEYS = ("samples", "date")  # samples go to samples.jsonl; the date breaks byte equality


class EvalConfigError(ValueError):
    """An evaluation that cannot run as configured (unknown task, missing data, unsafe code)."""


def available_tasks() -> list[str]:
    """Every task of the pack (file name == task name)."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def load_task_config(name: str, data_dir: str | Path) -> dict[str, Any]:
    """A task's config dict with its data files moved under `data_dir`."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager itself uses

    path = TASK_DIR / f"{name}.yaml"
    if not path.exists():
        raise EvalConfigError(f"unknown task {name!r}; the pack has {available_tasks()}")
    cfg = load_yaml(path, resolve_func=True)
    files = {}
    for split, rel in cfg["dataset_kwargs"]["data_files"].items():
        file = Path(data_dir) / Path(rel).relative_to(DATA_PREFIX)
        if not file.exists():
            target = file.parent.name
            raise EvalConfigError(
                f"task {name} needs {file}, which does not exist: add '{target}' to "
                f"data.prepared_targets and run the prepare_data stage, or drop {name} from "
                f"eval.tasks")
        files[split] = str(file)
    cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": files}
    return cfg


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token in front by default (as in training)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def flatten_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """{"task/metric": value} from lm-eval's results: the tasks' metrics only (no stderrs or
    sample counts), filter suffixes dropped."""
    flat: dict[str, float] = {}
    for task, values in results["results"].items():
        metrics = results["higher_is_better"][task]
        for key, value in values.items():
            metric = key.split(",")[0]
            if metric not in metrics or not isinstance(value, int | float):
                continue
            name = f"{task}/{metric}"
            if name in flat:
                raise ValueError(f"{name} is reported under two filters; keep one filter per "
                                 f"task in the pack")
            flat[name] = float(value)
    return dict(sorted(flat.items()))


def item_rows(results: Mapping[str, Any]) -> list[dict]:
    """Per-item metric values from lm-eval's logged samples (see the module doc)."""
    rows = []
    for task, samples in results["samples"].items():
        higher = results["higher_is_better"][task]
        for sample in samples:
            for metric in sample["metrics"]:
                value = sample[metric]
                row = {"task": task, "doc_id": sample["doc_id"], "id": sample["doc"]["id"],
                       "metric": metric, "higher_is_better": higher[metric]}
                if metric == "bits_per_byte":
                    loglikelihood, n_bytes = value
                    row.update(loglikelihood=loglikelihood, bytes=n_bytes,
                               value=-loglikelihood / n_bytes / math.log(2))
                else:
                    row["value"] = float(value)
                response = sample["filtered_resps"]
                if isinstance(response, list) and len(response) == 1 and isinstance(
                        response[0], str):
                    row["output"] = response[0]
                rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["doc_id"], r["metric"]))


def _serialise(obj: Any) -> Any:
    """JSON fallback for lm-eval's results: functions by name, the rest as lm-eval does."""
    from lm_eval.utils import handle_non_serializable

    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return handle_non_serializable(obj)


def _files_fingerprint(*dirs: Path | None) -> str:
    """Names, sizes and modification times of a model's files: changes when it is rewritten."""
    entries = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for d in dirs if d is not None
               for p in sorted(Path(d).rglob("*")) if p.is_file()]
    return content_hash(*entries)


def merge_results(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One lm-eval results dict from per-task ones: per-task tables are joined, the rest
    (model config, versions of the harness) taken from the first."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged.setdefault(key, value)
    return merged


def evaluate(cfg: Mapping[str, Any] | DictConfig, model_dir: str | Path, out_dir: str | Path,
             *, data_dir: str | Path, adapter_dir: str | Path | None = None,
             tasks: Sequence[str] | None = None,
             resume_dir: str | Path | None = None) -> dict[str, float]:
    """Score `model_dir` (plus a PEFT adapter, if given) on `tasks` (default cfg.tasks).

    Writes results.json, metrics.json and samples.jsonl to `out_dir`; returns the flat
    metrics. With `resume_dir`, finished tasks are kept there and reused after an
    interruption; the directory is removed once every output is written.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from naitbench.models.load import load_tokenizer, resolve_dtype

    cfg = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
    names = list(tasks if tasks is not None else cfg["tasks"])
    if not names:
        raise EvalConfigError("eval.tasks is empty: name at least one task of the pack")
    configs = [load_task_config(name, data_dir) for name in names]
    for name, task_cfg in zip(names, configs, strict=True):
        task_cfg["num_fewshot"] = (cfg.get("num_fewshot") or {}).get(name, 0)
        allowed = cfg["allow_code_eval"] and os.environ.get("HF_ALLOW_CODE_EVAL") == "1"
        if task_cfg.get("unsafe_code") and not allowed:
            raise EvalConfigError(
                f"task {name} executes model-written code: set eval.allow_code_eval=true and "
                f"export HF_ALLOW_CODE_EVAL=1 to run it, or drop it from eval.tasks")
    device = resolve_device(cfg["device"])
    dtype = resolve_dtype(cfg["dtype"]) if device != "cpu" else resolve_dtype("float32")
    model_args: dict[str, Any] = {
        "pretrained": str(model_dir), "dtype": str(dtype).removeprefix("torch."),
        "add_bos_token": adds_bos(load_tokenizer(model_dir))}
    if adapter_dir is not None:
        model_args["peft"] = str(adapter_dir)
    gen_kwargs = {"max_gen_toks": cfg["max_gen_toks"]} if cfg.get("max_gen_toks") else None
    settings = {k: cfg.get(k) for k in ("limit", "bootstrap_iters", "max_gen_toks",
                                        "batch_size", "allow_code_eval")}
    model_key = content_hash(json.dumps([model_args, settings, device], sort_keys=True),
                             _files_fingerprint(Path(model_dir), adapter_dir and Path(adapter_dir)))
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    lm = None
    parts = []
    for name, task_cfg in zip(names, configs, strict=True):
        key = content_hash(model_key, json.dumps(task_cfg, sort_keys=True, default=_serialise))
        kept = Path(resume_dir) / f"{name}-{key}.json" if resume_dir else None
        if kept is not None and kept.exists():
            parts.append(json.loads(kept.read_text()))
            continue
        if lm is None:
            lm = HFLM(**model_args, device=device, batch_size=cfg["batch_size"])
        result = lm_eval.simple_evaluate(
            model=lm, tasks=[task_cfg], limit=cfg.get("limit"), log_samples=True,
            bootstrap_iters=cfg["bootstrap_iters"], gen_kwargs=gen_kwargs,
            task_manager=manager, confirm_run_unsafe_code=bool(cfg["allow_code_eval"]))
        # the same JSON round trip whether a task was kept or not: identical outputs
        part = json.loads(json.dumps({k: v for k, v in result.items() if k != "date"},
                                     default=_serialise, sort_keys=True, ensure_ascii=False))
        if kept is not None:
            write_json(kept, part)
        parts.append(part)
    results = merge_results(parts)
    # the model went in as a loaded HFLM, so lm-eval could not record how it was built
    results.setdefault("config", {}).update(model="hf", model_args=model_args)
    out_dir = Path(out_dir)
    metrics = flatten_metrics(results)
    rows = item_rows(results)
    record = {k: v for k, v in results.items() if k not in VOLATILE_KEYS}
    text = json.dumps(record, default=_serialise, indent=2, sort_keys=True, ensure_ascii=False)
    write_json(out_dir / RESULTS_FILE, json.loads(text))
    write_json(out_dir / METRICS_FILE, metrics)
    write_jsonl(out_dir / SAMPLES_FILE, rows)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return metrics
