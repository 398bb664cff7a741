"""`python -m naitbench.recheck --venv .venv`: rebuild a committed revision from a fresh
clone and compare every score with the committed one.

A results page is only worth what a rebuild gives back. This clones the repository at a
commit into a temporary directory and runs the matrix there the way `make repro` does (the
train and evaluate cells `--cells` at once through naitbench.scale, the cores split between
them, then `dvc repro`), with an existing virtual environment
(building one takes minutes) and the local data mirror, then compares:
- every number in `data/scores/**/metrics.json`,
- every number of the report's `comparison.json` rows (means, replicate values, between-seed
  sd, differences to random and to full data with their intervals, ranks),
- the score tables of the results page (a table whose header names a task such as
  "HumanEval", whose rows start with a method name such as "NAIT (code)"),
- the md5 of every DVC output in `dvc.lock` (which stages give byte-identical artefacts).
The committed side is read from git at the commit, so a dirty working tree does not matter.
A number differs when it is further than the tolerance (1e-4) from the rebuilt one; a number
printed with d decimals is allowed half a unit of its last decimal on top. The command prints
the differences and writes a Markdown section for the results page; it exits with 1 when a
score differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from naitbench.cli import reported_errors
from naitbench.io import atomic_open
from naitbench.models.precision import cpu_info, native_bf16_flags

TOLERANCE = 1e-4
SCORES_DIR = "data/scores"
COMPARISON = "data/report/comparison.json"
LOCK = "dvc.lock"
DEFAULT_PAGE = "docs/results/embedded.md"
#: environment of the rebuild: offline, as `make repro` runs
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
               "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Snapshot:
    """The numbers of one revision: metrics files, the comparison rows, the DVC lock and
    the results page's text."""

    metrics: dict[str, dict] = field(default_factory=dict)
    comparison: dict | None = None
    lock: dict | None = None
    page: str | None = None


@dataclass(frozen=True)
class Check:
    """One compared number (or artefact hash): committed against rebuilt."""

    source: str
    key: str
    committed: float | str | None
    rebuilt: float | str | None
    allowed: float = TOLERANCE

    @property
    def difference(self) -> float | None:
        """|committed - rebuilt| for numbers (0 when both are the same NaN or infinity)."""
        a, b = self.committed, self.rebuilt
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return None
        if (math.isnan(a) and math.isnan(b)) or a == b:
            return 0.0
        return abs(a - b)

    @property
    def differs(self) -> bool:
        if self.committed is None or self.rebuilt is None:
            return True
        diff = self.difference
        if diff is None:
            return self.committed != self.rebuilt
        return not diff <= self.allowed       # NaN against a number differs


def _numbers(obj: object, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every numeric leaf of a JSON value, with a dotted path (list items by index)."""
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, int | float):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj):
            yield from _numbers(obj[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _numbers(item, f"{prefix}[{i}]")


def _pair(source: str, committed: Mapping[str, float], rebuilt: Mapping[str, float],
          tolerance: float) -> list[Check]:
    return [Check(source, key, committed.get(key), rebuilt.get(key), tolerance)
            for key in sorted(set(committed) | set(rebuilt))]


def metric_checks(committed: Snapshot, rebuilt: Snapshot,
                  tolerance: float = TOLERANCE) -> list[Check]:
    """Every number of every metrics.json (a file missing on one side: its numbers differ)."""
    def flat(snapshot: Snapshot) -> dict[str, float]:
        return {f"{path}: {key}": value for path, metrics in snapshot.metrics.items()
                for key, value in _numbers(metrics)}
    return _pair("metrics", flat(committed), flat(rebuilt), tolerance)


def _row_key(row: Mapping) -> str:
    return f"{row['arm']} {row['task']}/{row['metric']}"


def comparison_checks(committed: Snapshot, rebuilt: Snapshot,
                      tolerance: float = TOLERANCE) -> list[Check]:
    """Every number of the comparison rows (selection costs are timings, not scores)."""
    def flat(snapshot: Snapshot) -> dict[str, float]:
        rows = (snapshot.comparison or {}).get("rows", [])
        return {f"{_row_key(row)} {path}": value for row in rows
                for path, value in _numbers({k: v for k, v in row.items()
                                             if k not in ("ratio", "higher_is_better")})}
    return _pair("comparison", flat(committed), flat(rebuilt), tolerance)


def lock_checks(committed: Snapshot, rebuilt: Snapshot) -> list[Check]:
    """The md5 of every output recorded in both dvc.lock files."""
    def outs(lock: dict | None) -> dict[str, tuple[str, str]]:
        stages = (lock or {}).get("stages", {})
        return {out["path"]: (stage, out.get("md5", "")) for stage, body in stages.items()
                for out in body.get("outs", [])}
    mine, theirs = outs(committed.lock), outs(rebuilt.lock)
    return [Check("artefact", f"{mine[path][0]} {path}", mine[path][1], theirs[path][1], 0.0)
            for path in sorted(set(mine) & set(theirs))]


# --- the results page -------------------------------------------------------------------

NUMBER = re.compile(r"[-+]?\d+\.\d+")


@dataclass(frozen=True)
class PageNumber:
    """A number read from a results-page table cell."""

    row: str
    column: str
    value: float
    decimals: int
    field: str          # "mean", "sd", "vs_random.difference" or "vs_random.rank"
    task: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _tables(text: str) -> Iterator[list[list[str]]]:
    """Markdown tables as rows of cells (header first, the --- line dropped)."""
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 3 and set(block[1].replace("|", "").strip()) <= set("-: "):
            yield [_cells(block[0]), *(_cells(b) for b in block[2:])]
        block = []


def header_task(header: str, tasks: Sequence[str]) -> str | None:
    """The task a column header names: its benchmark word must appear ("HumanEval bpb" ->
    nb_humaneval_bpb); among several, the one with most of its name's parts present (bpb
    against pass1); None when that is not a single task."""
    plain = re.sub(r"[^a-z0-9]", "", header.lower())
    hits = {}
    for task in tasks:
        parts = task.split("_")[1:] if task.startswith("nb_") else task.split("_")
        if parts and parts[0] in plain:
            hits[task] = sum(part in plain for part in parts)
    best = [t for t, n in hits.items() if n == max(hits.values(), default=0)]
    return best[0] if len(best) == 1 else None


def page_numbers(text: str, tasks: Sequence[str]) -> list[PageNumber]:
    """The numbers of every table whose header names one of `tasks`: a task column holds the
    mean (and, in parentheses, the between-seed sd); a "vs random" column right after it
    holds the difference to random (and the rank in parentheses)."""
    found = []
    for header, *rows in _tables(text):
        columns: list[tuple[str, str] | None] = []
        current = None
        for name in header:
            plain = re.sub(r"[^a-z0-9]", "", name.lower())
            task = header_task(name, tasks)
            if task is not None and not plain.startswith("vs"):
                current = task
                columns.append((task, "mean"))
            elif plain.startswith("vsrandom") and current is not None:
                columns.append((current, "vs_random"))
            else:
                columns.append(None)
        if not any(columns):
            continue
        for cells in rows:
            for name, cell, column in zip(header, cells, columns, strict=False):
                if column is None:
                    continue
                cell = cell.replace("*", "")
                numbers = NUMBER.findall(cell)
                if not numbers:
                    continue
                task, kind = column
                first = numbers[0]
                decimals = len(first.split(".")[1])
                found.append(PageNumber(cells[0], name, float(first), decimals,
                                        "mean" if kind == "mean" else "vs_random.difference",
                                        task))
                rest = re.search(r"\(([-+]?\d+(?:\.\d+)?)\)", cell.replace(first, "", 1))
                if rest:
                    value = rest.group(1)
                    found.append(PageNumber(
                        cells[0], name, float(value),
                        len(value.split(".")[1]) if "." in value else 0,
                        "sd" if kind == "mean" else "vs_random.rank", task))
    return found


def _match_row(label: str, task: str, rows: Sequence[Mapping]) -> Mapping | None:
    """The comparison row a page label names: its leading word is the method ("RDS+
    (code)" -> rds), a parenthesised word may name the target; None unless exactly one."""
    lead = re.match(r"[a-z0-9]+", label.lower().replace("*", "").strip())
    if lead is None:
        return None
    words = set(re.findall(r"[a-z0-9]+", label.lower()))
    found = [r for r in rows if r["task"] == task and r["method"] == lead.group(0)
             and (r.get("target") is None or r["target"] in words or
                  sum(1 for o in rows if o["task"] == task and o["method"] == r["method"]) == 1)]
    return found[0] if len(found) == 1 else None


#: the report's first screen (report.md's "Answer" table, copied onto a results page): one
#: row per task and arm; a column whose header starts with a key holds these row fields
SCREEN_COLUMNS = {"difference to random": ("vs_random.difference", "vs_random.low",
                                           "vs_random.high"),
                  "holm-adjusted p": ("family_p",),
                  "rank among random": ("vs_random.rank",),
                  "smallest detectable": ("vs_random.detectable",)}
SCREEN_VERDICT = "verdict (holm)"
RANK = re.compile(r"\d+(?= of \d+)")


def _screen_tables(text: str) -> Iterator[tuple[list[str], int, int, list[list[str]]]]:
    """First-screen tables: their header, the task and arm column indices, their rows."""
    for header, *rows in _tables(text):
        low = [h.lower() for h in header]
        if "task" in low and "arm" in low:
            yield header, low.index("task"), low.index("arm"), rows


def screen_numbers(text: str) -> list[PageNumber]:
    """The numbers of the first screen: `row` is the arm's name and `task` the task's title,
    as the report writes them (a comparison row's `arm_name` and `task_title`)."""
    found = []
    for header, task_at, arm_at, rows in _screen_tables(text):
        for cells in rows:
            for name, cell in zip(header, cells, strict=False):
                key = next((k for k in SCREEN_COLUMNS if name.lower().startswith(k)), None)
                if key is None:
                    continue
                cell = cell.replace("*", "")
                numbers = RANK.findall(cell) if key == "rank among random" \
                    else NUMBER.findall(cell)
                for field_name, number in zip(SCREEN_COLUMNS[key], numbers, strict=False):
                    decimals = len(number.split(".")[1]) if "." in number else 0
                    found.append(PageNumber(cells[arm_at], name, float(number), decimals,
                                            field_name, cells[task_at]))
    return found


def screen_verdicts(text: str) -> list[tuple[str, str, str]]:
    """(task title, arm name, verdict) of every first-screen row."""
    found = []
    for header, task_at, arm_at, rows in _screen_tables(text):
        low = [h.lower() for h in header]
        if SCREEN_VERDICT in low:
            at = low.index(SCREEN_VERDICT)
            found += [(cells[task_at], cells[arm_at], cells[at].replace("*", "").strip())
                      for cells in rows if len(cells) > at]
    return found


def _field(row: Mapping | None, path: str) -> object:
    value: object = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def page_checks(committed: Snapshot, rebuilt: Snapshot,
                tolerance: float = TOLERANCE) -> tuple[list[Check], list[PageNumber]]:
    """Page numbers (score tables and the first screen, its verdicts included) against the
    rebuilt comparison rows; also the numbers no row matched."""
    rows = (rebuilt.comparison or {}).get("rows", [])
    tasks = sorted({r["task"] for r in rows})
    titled = {(r.get("task_title"), r.get("arm_name")): r for r in rows}
    page = committed.page or ""
    checks, unmatched = [], []
    numbers = [(n, _match_row(n.row, n.task, rows)) for n in page_numbers(page, tasks)]
    numbers += [(n, titled.get((n.task, n.row))) for n in screen_numbers(page)]
    for number, row in numbers:
        value = _field(row, number.field)
        if row is None or not isinstance(value, int | float):
            unmatched.append(number)
            continue
        checks.append(Check("page", f"{number.row} / {number.column} / {number.field}",
                            number.value, value, tolerance + 0.5 * 10 ** -number.decimals))
    for task, arm, verdict in screen_verdicts(page):
        row = titled.get((task, arm))
        checks.append(Check("page", f"{arm} / {task} / verdict (Holm)", verdict,
                            None if row is None else row.get("family_verdict")))
    return checks, unmatched


# --- snapshots: git at a commit, or a working tree ---------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def snapshot_from_git(repo: Path, commit: str, page: str | None = DEFAULT_PAGE) -> Snapshot:
    """The committed numbers, read from git (metrics files are committed next to dvc.lock)."""
    files = _git(repo, "ls-tree", "-r", "--name-only", commit, "--", SCORES_DIR,
                 COMPARISON, LOCK, *([page] if page else [])).split("\n")

    def show(path: str) -> str:
        return _git(repo, "show", f"{commit}:{path}")
    snap = Snapshot(metrics={f.removeprefix(SCORES_DIR + "/"): json.loads(show(f))
                             for f in files if f.startswith(SCORES_DIR + "/")
                             and f.endswith("/metrics.json")})
    if COMPARISON in files:
        snap.comparison = json.loads(show(COMPARISON))
    if LOCK in files:
        snap.lock = _yaml(show(LOCK))
    if page and page in files:
        snap.page = show(page)
    return snap


def snapshot_from_tree(root: Path, page: str | None = DEFAULT_PAGE) -> Snapshot:
    """The numbers of a working tree (the rebuilt clone)."""
    root = Path(root)
    scores = root / SCORES_DIR
    snap = Snapshot(metrics={str(p.relative_to(scores)): json.loads(p.read_text())
                             for p in sorted(scores.glob("**/metrics.json"))})
    if (root / COMPARISON).exists():
        snap.comparison = json.loads((root / COMPARISON).read_text())
    if (root / LOCK).exists():
        snap.lock = _yaml((root / LOCK).read_text())
    if page and (root / page).exists():
        snap.page = (root / page).read_text()
    return snap


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text) or {}


# --- the rebuild ------------------------------------------------------------------------

def point_at_mirror(params: object, old: str, new: str) -> object:
    """params.yaml values with the committed data root `old` replaced by `new` (the
    composed file holds resolved paths, so every path under the mirror starts with it)."""
    if isinstance(params, dict):
        return {k: point_at_mirror(v, old, new) for k, v in params.items()}
    if isinstance(params, list):
        return [point_at_mirror(v, old, new) for v in params]
    if isinstance(params, str) and (params == old or params.startswith(old.rstrip("/") + "/")):
        return new + params[len(old.rstrip("/")):]
    return params


def repro_commands(bin_dir: Path, cells: int, cores: int) -> list[list[str]]:
    """The commands of the Makefile's `repro` target (its estimate aside): the pending train
    and evaluate cells `cells` at once, `cores // cells` threads each, in short rounds,
    through Hydra's joblib launcher; then `dvc repro` for the rest."""
    if cells < 1:
        raise ValueError(f"--cells {cells}: give 1 or more")
    scale = [str(bin_dir / "python"), "-m", "naitbench.scale", "hydra/launcher=joblib",
             f"hydra.launcher.n_jobs={cells}", f"scale.threads={max(1, cores // cells)}",
             f"scale.chunk={cells}"]
    return [scale, [str(bin_dir / "dvc"), "repro"]]


def rebuild(repo: Path, commit: str, venv: Path, data_root: Path | None,
            workdir: Path, cells: int = 2) -> tuple[Path, float]:
    """Clone `repo` at `commit` into `workdir`/repo, remove the committed results there (so
    every stage runs), point its committed params.yaml at the data mirror (default: the
    committed data root as seen from `repo`) and run `repro_commands` with `venv`'s tools;
    return the clone and the repro's wall time (s)."""
    import yaml

    bin_dir = Path(venv).resolve() / "bin"
    if not (bin_dir / "python").exists():
        raise FileNotFoundError(f"--venv {venv}: no bin/python there (build it with "
                                f"`make install` in a checkout first)")
    clone = workdir / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(clone)],
                   check=True)
    _git(clone, "checkout", "--quiet", commit)
    for tracked in _git(clone, "ls-files", "data").split("\n"):   # committed results
        if tracked and not tracked.endswith(".gitignore"):
            (clone / tracked).unlink()
    params_file = clone / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    old = str(params["paths"]["data_root"])
    new = str((Path(data_root) if data_root else repo / old).resolve())
    if not Path(new).is_dir():
        raise FileNotFoundError(f"data mirror {new} does not exist (--data-root)")
    with atomic_open(params_file) as handle:
        yaml.safe_dump(point_at_mirror(params, old, new), handle, sort_keys=False)
    env = {**os.environ, **OFFLINE_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{clone / 'src'}{os.pathsep}{clone}",
           "VIRTUAL_ENV": str(bin_dir.parent)}
    began = time.perf_counter()
    for command in repro_commands(bin_dir, cells, os.cpu_count() or 1):
        subprocess.run(command, cwd=clone, env=env, check=True)
    return clone, time.perf_counter() - began


def rebuilt_versions(clone: Path) -> dict[str, str]:
    """The library versions the rebuild's selection manifests recorded."""
    for path in sorted((Path(clone) / "data" / "subsets").glob("*.manifest.json")):
        versions = json.loads(path.read_text()).get("versions")
        if versions:
            return versions
    return {}


# --- output -----------------------------------------------------------------------------

def cpu_kind(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name, family and model numbers (a VM's model name can be as short as
    "AMD EPYC") and its native bf16 instructions (or "no native bf16"): bf16 kernels differ
    between AMX, AVX512-BF16 and emulation, so rebuilt bf16 numbers match only on the same
    kind (docs/reproducibility.md)."""
    info = cpu_info(cpuinfo)
    if not info:
        return "CPU unknown"
    name = info.get("model name") or platform.processor() or "CPU"
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    native = native_bf16_flags(info)
    return f"{name}; {', '.join(native) if native else 'no native bf16'}"


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summary(commit: str, checks: Sequence[Check], unmatched: Sequence[PageNumber],
            page: str | None, how: str, tolerance: float,
            versions: Mapping[str, str]) -> str:
    """The Markdown section for the results page; `how` says how the rebuild ran."""
    scores = [c for c in checks if c.source != "artefact"]
    artefacts = [c for c in checks if c.source == "artefact"]
    software = ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "versions unknown"
    lines = ["## Rebuild from a fresh clone", "",
             f"`python -m naitbench.recheck` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
             f"a fresh clone of `{commit[:7]}`, {how}, on {platform.machine()} with "
             f"{os.cpu_count()} CPUs ({cpu_kind()}), {software}. "
             f"A number differs when it is more than {tolerance:g} from the rebuilt one "
             "(a printed number: plus half a unit of its last decimal).", "",
             "| compared | numbers | differ | largest difference |", "|---|---|---|---|"]
    labels = {"metrics": f"`{SCORES_DIR}/**/metrics.json`",
              "comparison": f"`{COMPARISON}` rows",
              "page": f"score tables of `{page}`"}
    for source, label in labels.items():
        group = [c for c in scores if c.source == source]
        if not group:
            continue
        largest = max((c.difference for c in group if c.difference is not None), default=None)
        lines.append(f"| {label} | {len(group)} | {sum(c.differs for c in group)} | "
                     f"{'-' if largest is None else f'{largest:.2g}'} |")
    differing = [c for c in scores if c.differs]
    lines += ["", f"Differences beyond {tolerance:g}: " + ("none." if not differing else "")]
    if differing:
        lines += ["", "| source | number | committed | rebuilt |", "|---|---|---|---|"]
        lines += [f"| {c.source} | {c.key} | {_fmt(c.committed)} | {_fmt(c.rebuilt)} |"
                  for c in differing]
    if unmatched:
        lines += ["", "Page numbers not compared (no single comparison row matches): "
                  + "; ".join(f"{n.row} / {n.column}" for n in unmatched) + "."]
    if artefacts:
        by_stage: dict[str, list[bool]] = {}
        for c in artefacts:
            by_stage.setdefault(c.key.split(" ")[0].split("@")[0], []).append(c.differs)
        lines += ["", "Artefacts (md5 in `dvc.lock`, committed against rebuilt):", "",
                  "| stage | outputs | byte-identical |", "|---|---|---|"]
        lines += [f"| {stage} | {len(flags)} | {len(flags) - sum(flags)} |"
                  for stage, flags in sorted(by_stage.items())]
    return "\n".join(lines) + "\n"


def recheck(committed: Snapshot, rebuilt: Snapshot,
            tolerance: float = TOLERANCE) -> tuple[list[Check], list[PageNumber]]:
    """Every check of the rebuilt snapshot against the committed one."""
    page, unmatched = page_checks(committed, rebuilt, tolerance)
    return ([*metric_checks(committed, rebuilt, tolerance),
             *comparison_checks(committed, rebuilt, tolerance), *page,
             *lock_checks(committed, rebuilt)], unmatched)


def main(argv: Sequence[str] | None = None) -> int:
    with reported_errors():
        parser = argparse.ArgumentParser(prog="python -m naitbench.recheck",
                                         description=__doc__.split("\n\n")[0])
        parser.add_argument("--venv", type=Path, help="an existing virtual environment with "
                            "this project's dependencies (e.g. .venv after `make install`)")
        parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository to clone")
        parser.add_argument("--commit", default="HEAD")
        parser.add_argument("--data-root", type=Path, help="the local data mirror (default: "
                            "the committed paths.data_root, relative to --repo)")
        parser.add_argument("--workdir", type=Path, help="where to clone (default: a new "
                            "temporary directory, kept for inspection)")
        parser.add_argument("--rebuilt", type=Path, help="compare an already rebuilt clone "
                            "instead of rebuilding")
        parser.add_argument("--cells", type=int, default=2, help="train and evaluate cells at "
                            "once, as `make repro CELLS=N` (default 2: the results pages' runs)")
        parser.add_argument("--page", default=DEFAULT_PAGE, help="results page to check")
        parser.add_argument("--tolerance", type=float, default=TOLERANCE)
        parser.add_argument("--out", type=Path, help="Markdown summary (default: "
                            "<workdir>/recheck.md)")
        args = parser.parse_args(argv)
        commit = _git(args.repo, "rev-parse", args.commit).strip()
        if _git(args.repo, "status", "--porcelain", "--untracked-files=no").strip():
            print(f"note: {args.repo} has uncommitted changes; the rebuild uses {commit[:7]}",
                  file=sys.stderr)
        if args.rebuilt is not None:
            clone = args.rebuilt
            how = f"rebuilt beforehand in `{clone}` (not timed here)"
        else:
            if args.venv is None:
                parser.error("--venv is required unless --rebuilt is given")
            workdir = args.workdir or Path(tempfile.mkdtemp(prefix="naitbench-recheck-"))
            workdir.mkdir(parents=True, exist_ok=True)
            clone, wall_s = rebuild(args.repo.resolve(), commit, args.venv, args.data_root,
                                    workdir, args.cells)
            path = f"`make repro`'s path with {args.cells} cell(s) at once"
            how = f"{path} from nothing ({wall_s / 60:.1f} min)"
        checks, unmatched = recheck(snapshot_from_git(args.repo, commit, args.page),
                                    snapshot_from_tree(clone, args.page), args.tolerance)
        for check in checks:
            if check.differs and check.source != "artefact":
                print(f"DIFFERS {check.source:10s} {check.key}: committed {_fmt(check.committed)}"
                      f", rebuilt {_fmt(check.rebuilt)}")
        text = summary(commit, checks, unmatched, args.page, how, args.tolerance,
                       rebuilt_versions(clone))
        out = args.out or clone.parent / "recheck.md"
        with atomic_open(out) as handle:
            handle.write(text)
        print(text)
        print(f"summary written: {out}; rebuilt clone: {clone}")
        return int(any(c.differs for c in checks if c.source != "artefact"))


if __name__ == "__main__":
    sys.exit(main())
