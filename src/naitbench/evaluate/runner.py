"""Scoring one model with lm-evaluation-harness on the repo's task pack.

The task YAMLs (`tasks/`) are the readable source: one file per task, named like the task.
Their `data_files` are written relative to the default data directory (`data/...`, so the
lm-eval CLI works from the repo root with `--include_path src/naitbench/evaluate/tasks`);
at run time that prefix is replaced with the run's data directory and the configs go to
`lm_eval.simple_evaluate` as dicts.

Outputs (in `out_dir`):
  results.json   lm-eval's full results (configs, versions, n-shot, ...), without samples
                 and the run date (same config -> same bytes), plus `compute`: the precision
                 and device that scored (naitbench.models.precision)
  metrics.json   {"<task>/<metric>": value} (lm-eval's aggregate, e.g. bits per byte)
  samples.jsonl  one row per task and item: task, doc_id, id (the held-out record id),
                 metric, value, higher_is_better (+ loglikelihood and bytes for bits per
                 byte, the model's output for generative tasks), sorted by task and doc_id

Tasks run one at a time on one loaded model; with a `resume_dir`, each finished task's
results are kept there, so an interrupted evaluation re-runs only the unfinished tasks
(a kept result counts only for the same task config, model files and settings).
`evaluate_many` scores several models in one process (one model load per pretrained
directory, LoRA adapters swapped on it, task objects built once); each model's outputs are
the ones `evaluate` writes for it alone.

Precision: on a GPU the weights load in eval.dtype (auto: bf16, else fp16). On the CPU they
stay fp32; eval.dtype=bfloat16 turns on lm-eval's bf16 autocast (`mixed_precision_dtype`,
log-softmax in fp32). `auto` keeps fp32 on the CPU, native bf16 or not: bf16 moved bits per
byte by more than the 0.002 the scores may move (see CPU_PRECISION).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from naitbench.errors import UserError
from naitbench.io import content_hash, write_json, write_jsonl

if TYPE_CHECKING:
    import torch

TASK_DIR = Path(__file__).resolve().parent / "tasks"
DATA_PREFIX = Path("data")
RESULTS_FILE, METRICS_FILE, SAMPLES_FILE = "results.json", "metrics.json", "samples.jsonl"
#: a generic target's tasks: nb_<target>_bpb, nb_<target>_em (tasks/generic_*.tmpl)
GENERIC_TASK, GENERIC_PLACEHOLDER = re.compile(r"^nb_(.+)_(bpb|em)$"), "TARGET"
VOLATILE_KEYS = ("samples", "date")  # samples go to samples.jsonl; the date breaks byte equality
#: eval.dtype on the CPU, in models.precision's terms (the weights stay fp32 there). `auto`
#: stays fp32 even on CPUs with native bf16: bf16 autocast moved the base model's bits per
#: byte by more than the 0.002 allowed (BENCHMARKS.md, "Scoring"), so only `bfloat16` uses it.
CPU_PRECISION = {"auto": "fp32", "float32": "fp32", "bfloat16": "bf16"}


class EvalConfigError(UserError, ValueError):
    """An evaluation that cannot run as configured (unknown task, missing data, unsafe code)."""


def available_tasks() -> list[str]:
    """Every task of the pack (file name == task name)."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def generic_task(name: str) -> tuple[str, str] | None:
    """(target, metric template) of a generic target's task name `nb_<target>_<bpb|em>`."""
    match = GENERIC_TASK.match(name)
    return (match.group(1), match.group(2)) if match and \
        not (TASK_DIR / f"{name}.yaml").exists() else None


def _generic_path(name: str, data_dir: str | Path) -> tuple[Path, str]:
    """The template of a generic target's task, after checking the target was prepared as
    one (and, for exact match, with answers)."""
    found = generic_task(name)
    if found is None:
        raise EvalConfigError(
            f"unknown task {name!r}; the pack has {available_tasks()}, and a target of kind "
            f"generic named <t> is scored by nb_<t>_bpb (and nb_<t>_em with an answer)")
    target, metric = found
    heldout = Path(data_dir) / "targets" / target / "heldout.jsonl"
    if not heldout.exists():
        raise EvalConfigError(
            f"task {name} scores target '{target}', whose held-out set {heldout} does not "
            f"exist: add '{target}' to data.prepared_targets and run the prepare_data stage")
    with heldout.open(encoding="utf-8") as lines:
        first = json.loads(next(lines, "{}") or "{}").get("eval", {})
    if first.get("kind") != "generic":
        raise EvalConfigError(f"task {name}: target '{target}' is not of kind generic; the "
                              f"pack's own tasks score it: {available_tasks()}")
    if metric == "em" and first.get("answer") is None:
        raise EvalConfigError(f"task {name}: target '{target}' has no answers to match; set "
                              f"targets.{target}.answer_pattern or fields.answer, or score "
                              f"nb_{target}_bpb only")
    return TASK_DIR / f"generic_{metric}.tmpl", target


def load_task_config(name: str, data_dir: str | Path) -> dict[str, Any]:
    """A task's config dict with its data files moved under `data_dir`; a generic target's
    task is its template (tasks/generic_*.tmpl) with the target's name put in."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager itself uses

    path, target = TASK_DIR / f"{name}.yaml", None
    if not path.exists():
        path, target = _generic_path(name, data_dir)
    cfg = load_yaml(path, resolve_func=True)
    if target is not None:
        cfg["task"] = name
        cfg["dataset_kwargs"]["data_files"] = {
            split: rel.replace(GENERIC_PLACEHOLDER, target)
            for split, rel in cfg["dataset_kwargs"]["data_files"].items()}
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


@dataclass(frozen=True)
class Row:
    """One model to score: its pretrained directory, an optional LoRA adapter, where its
    outputs go and where its finished tasks are kept for a resume."""

    model_dir: Path
    out_dir: Path
    adapter_dir: Path | None = None
    resume_dir: Path | None = None


def cpu_autocast(dtype: str) -> torch.dtype | None:
    """The autocast dtype for scoring on the CPU with eval.dtype=`dtype` (None: fp32).

    The weights stay fp32 on the CPU; `bfloat16` autocasts to bf16 (emulated, and slower
    than fp32, on CPUs without native bf16), `auto` and `float32` keep fp32.
    """
    from naitbench.models.precision import resolve_autocast

    if dtype not in CPU_PRECISION:
        raise EvalConfigError(f"eval.dtype={dtype!r} cannot score on the CPU: use one of "
                              f"{sorted(CPU_PRECISION)}")
    return resolve_autocast(CPU_PRECISION[dtype], "cpu")


def _task_configs(cfg: Mapping[str, Any], names: Sequence[str], data_dir: str | Path
                  ) -> list[dict[str, Any]]:
    """The task configs of `names`, refused when they cannot run as configured."""
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
    return configs


@contextmanager
def _adapter_on(lm: Any, adapter_dir: Path | None) -> Iterator[None]:
    """The loaded model wrapped with a LoRA adapter for one row, exactly as HFLM(peft=...)
    wraps it, and unwrapped afterwards (peft's `unload` puts the original layers back)."""
    if adapter_dir is None:
        yield
        return
    from peft import PeftModel

    if lm.config.vocab_size != len(lm.tokenizer):
        raise EvalConfigError(
            f"{adapter_dir}: the tokenizer ({len(lm.tokenizer)} tokens) does not match the "
            f"model's vocabulary ({lm.config.vocab_size}); lm-eval would resize the model for "
            f"the adapter, so score this model alone with evaluate()")
    lm._model, lm.peft = PeftModel.from_pretrained(lm._model, str(adapter_dir)), str(adapter_dir)
    try:
        yield
    finally:
        lm._model, lm.peft = lm._model.unload(), None


def evaluate_many(cfg: Mapping[str, Any] | DictConfig, rows: Sequence[Row], *,
                  data_dir: str | Path, tasks: Sequence[str] | None = None
                  ) -> list[dict[str, float]]:
    """Score several models in one process, paying the setup once: each pretrained
    directory is loaded once (rows sharing it follow one another, adapters are put on and
    taken off between them) and lm-eval's task objects are built once for all rows.

    Every row's outputs are those `evaluate` writes for it alone (same files, same resume
    keys); returns each row's flat metrics, in the order of `rows`.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from naitbench.models.load import load_tokenizer, resolve_dtype
    from naitbench.models.precision import compute_record

    cfg = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
    names = list(tasks if tasks is not None else cfg["tasks"])
    configs = _task_configs(cfg, names, data_dir)
    device = resolve_device(cfg["device"])
    on_cpu = device == "cpu"
    dtype = resolve_dtype("float32" if on_cpu else cfg["dtype"])
    cast = cpu_autocast(cfg["dtype"]) if on_cpu else None
    compute = compute_record(cast if on_cpu else dtype, device)
    gen_kwargs = {"max_gen_toks": cfg["max_gen_toks"]} if cfg.get("max_gen_toks") else None
    settings = {k: cfg.get(k) for k in ("limit", "bootstrap_iters", "max_gen_toks",
                                        "batch_size", "allow_code_eval")}
    # lm-eval's own autocast around the forward pass, log-softmax in fp32; named only when
    # on, so fp32 keys and results stay as they were
    mixed = {} if cast is None else {"mixed_precision_dtype": str(cast).removeprefix("torch."),
                                     "softmax_dtype": "float32"}
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    built: dict[str, Any] = {}  # task objects, built on first use and shared by every row
    metrics: dict[int, dict[str, float]] = {}
    order = sorted(range(len(rows)), key=lambda i: str(rows[i].model_dir))  # stable: groups
    lm, lm_dir, bos = None, None, {}
    for i in order:
        row = rows[i]
        if row.model_dir not in bos:
            bos[row.model_dir] = adds_bos(load_tokenizer(row.model_dir))
        model_args: dict[str, Any] = {
            "pretrained": str(row.model_dir), "dtype": str(dtype).removeprefix("torch."),
            "add_bos_token": bos[row.model_dir], **mixed}
        if row.adapter_dir is not None:
            model_args["peft"] = str(row.adapter_dir)
        model_key = content_hash(
            json.dumps([model_args, settings, device], sort_keys=True),
            _files_fingerprint(Path(row.model_dir), row.adapter_dir and Path(row.adapter_dir)))
        parts: dict[str, Any] = {}
        kept: dict[str, Path | None] = {}
        for name, task_cfg in zip(names, configs, strict=True):
            key = content_hash(model_key, json.dumps(task_cfg, sort_keys=True,
                                                     default=_serialise))
            kept[name] = Path(row.resume_dir) / f"{name}-{key}.json" if row.resume_dir else None
            if kept[name] is not None and kept[name].exists():
                parts[name] = json.loads(kept[name].read_text())
        todo = [(n, c) for n, c in zip(names, configs, strict=True) if n not in parts]
        if todo and lm_dir != row.model_dir:
            lm = None  # the previous model goes before the next one loads
            base_args = {k: v for k, v in model_args.items() if k != "peft"}
            lm = HFLM(**base_args, device=device, batch_size=cfg["batch_size"])
            lm_dir = row.model_dir
        with _adapter_on(lm, row.adapter_dir if todo else None):
            for name, task_cfg in todo:
                if name not in built:
                    built[name] = manager.load([task_cfg])["tasks"][name]
                result = lm_eval.simple_evaluate(
                    model=lm, tasks=[built[name]], limit=cfg.get("limit"), log_samples=True,
                    bootstrap_iters=cfg["bootstrap_iters"], gen_kwargs=gen_kwargs,
                    task_manager=manager, confirm_run_unsafe_code=bool(cfg["allow_code_eval"]))
                # the same JSON round trip whether a task was kept or not: identical outputs
                parts[name] = json.loads(json.dumps(
                    {k: v for k, v in result.items() if k != "date"}, default=_serialise,
                    sort_keys=True, ensure_ascii=False))
                if kept[name] is not None:
                    write_json(kept[name], parts[name])
        metrics[i] = _write_outputs([parts[n] for n in names], model_args, row, compute)
    return [metrics[i] for i in range(len(rows))]


def _write_outputs(parts: Sequence[Mapping[str, Any]], model_args: Mapping[str, Any],
                   row: Row, compute: Mapping[str, str]) -> dict[str, float]:
    """results.json, metrics.json and samples.jsonl of one row; its kept tasks removed."""
    results = merge_results(parts)
    # the model went in as a loaded HFLM, so lm-eval could not record how it was built
    results.setdefault("config", {}).update(model="hf", model_args=dict(model_args))
    metrics = flatten_metrics(results)
    rows = item_rows(results)
    record = {k: v for k, v in results.items() if k not in VOLATILE_KEYS}
    record["compute"] = dict(compute)   # naitbench.models.precision.COMPUTE
    text = json.dumps(record, default=_serialise, indent=2, sort_keys=True, ensure_ascii=False)
    out_dir = Path(row.out_dir)
    write_json(out_dir / RESULTS_FILE, json.loads(text))
    write_json(out_dir / METRICS_FILE, metrics)
    write_jsonl(out_dir / SAMPLES_FILE, rows)
    if row.resume_dir is not None:
        shutil.rmtree(row.resume_dir, ignore_errors=True)
    return metrics


def evaluate(cfg: Mapping[str, Any] | DictConfig, model_dir: str | Path, out_dir: str | Path,
             *, data_dir: str | Path, adapter_dir: str | Path | None = None,
             tasks: Sequence[str] | None = None,
             resume_dir: str | Path | None = None) -> dict[str, float]:
    """Score `model_dir` (plus a PEFT adapter, if given) on `tasks` (default cfg.tasks).

    Writes results.json, metrics.json and samples.jsonl to `out_dir`; returns the flat
    metrics. With `resume_dir`, finished tasks are kept there and reused after an
    interruption; the directory is removed once every output is written.
    """
    row = Row(Path(model_dir), Path(out_dir), adapter_dir and Path(adapter_dir),
              resume_dir and Path(resume_dir))
    return evaluate_many(cfg, [row], data_dir=data_dir, tasks=tasks)[0]
