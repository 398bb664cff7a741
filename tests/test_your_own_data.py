"""docs/your-own-data.md end to end: a user-made chat-messages pool, a user-made target and a
HF model directory, through exactly the config files and the `make repro` command the page
shows (its blocks that start with `# <path>` are written to that path, its bash blocks run),
on the tiny random Llama. The report must name the target's tasks; the saved NAIT library
must score the pool as the run did.

The harness adds to the documented command only what a test needs: `CELLS=1` (documented:
one cell at a time, no measurement), and this test's virtual environment in place of
`.venv` (`VENV=`, with `-o` on its install stamp: the environment running the tests is the
installed one).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO, repo_copy, run_ok

from naitbench.io import read_jsonl, write_jsonl

DOC = REPO / "docs" / "your-own-data.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def doc_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the page, in order."""
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def conversion(n: int, unit: str = "km", to: str = "metres", factor: int = 1000
               ) -> tuple[str, str]:
    return f"Convert {n} {unit} to {to}.", f"{n} {unit} is {n * factor} {to}.\nAnswer: {n * factor}"


def write_user_files(root: Path) -> None:
    """The example domain's files: a chat pool (conversions among other chats, some with a
    system message or several turns), 20 in-domain and 12 held-out conversions."""
    rng = random.Random(0)
    chats = []
    for n in range(100, 140):
        question, answer = conversion(n, "kg", "grams")
        chats.append([{"role": "system", "content": "Be brief."}] * (n % 2) +
                     [{"role": "user", "content": question},
                      {"role": "assistant", "content": answer}])
    for i in range(80):
        topic = rng.choice(["a poem about rain", "the capital of Peru", "a packing list",
                            "why the sky is blue", "a haiku about tea", "three prime numbers"])
        turns = [{"role": "user", "content": f"Tell me {topic}, please ({i})."},
                 {"role": "assistant", "content": f"Here is {topic}: item {i}."}]
        if i % 3 == 0:
            turns += [{"role": "user", "content": "Shorter?"},
                      {"role": "assistant", "content": f"{topic.split()[-1]} {i}."}]
        chats.append(turns)
    rng.shuffle(chats)
    own = root / "data" / "own" / "units"
    write_jsonl(own / "pool.jsonl", [{"messages": m} for m in chats])
    pairs = [conversion(n) for n in range(1, 33)]
    write_jsonl(own / "indomain.jsonl", [{"question": q, "solution": a} for q, a in pairs[:20]])
    write_jsonl(own / "heldout.jsonl", [{"question": q, "solution": a} for q, a in pairs[20:]])


def install_stamp(venv: Path, repo: Path) -> Path:
    """The Makefile's install stamp of `repo`'s files in `venv`."""
    digest = hashlib.sha256(b"".join((repo / name).read_bytes() for name in
                                     ("pyproject.toml", "requirements.lock", "Makefile")))
    return venv / f".installed-{digest.hexdigest()[:16]}"


@pytest.mark.slow
def test_your_own_data_page_end_to_end(tmp_path, tiny_model_dir):
    copy, env = repo_copy(tmp_path)
    write_user_files(copy)
    shutil.copytree(tiny_model_dir, copy / "data" / "own" / "my-model")
    files = {body.split("\n", 1)[0][2:].strip(): body.split("\n", 1)[1]
             for lang, body in doc_blocks() if lang == "yaml" and body.startswith("# ")}
    assert set(files) == {"conf/target/units.yaml", "conf/profile/units.yaml"}
    for rel, text in files.items():
        (copy / rel).write_text(text, encoding="utf-8")
    commands = [line for lang, body in doc_blocks() if lang == "bash"
                for line in body.splitlines() if line.strip()]
    assert commands[0] == "make repro PROFILE=units", commands

    venv = Path(sys.prefix)
    harness = ["CELLS=1", f"VENV={venv}", "-o", str(install_stamp(venv, copy)),
               f"PYTHON={sys.executable}"]
    out = run_ok([*commands[0].split(), *harness], copy, env)

    assert "No estimate for profile 'units': no rates for model my-model" in out
    data = copy / "data"
    prepared = json.loads((data / "prepare_report.json").read_text())
    assert prepared["targets"]["units"]["indomain"] == 20
    assert prepared["targets"]["units"]["heldout"] == 12
    assert prepared["pool"]["first_turn_pairs"] == 120
    rows = json.loads((data / "report" / "comparison.json").read_text())["rows"]
    assert {r["task"] for r in rows} == {"nb_units_bpb", "nb_units_em"}
    assert {r["arm"] for r in rows} >= {"nait/units/0.1", "rds/units/0.1", "bm25/units/0.1",
                                        "length/0.1", "random/0.1", "full", "base"}
    report = (data / "report" / "report.md").read_text()
    assert "units held-out responses, bits per byte (target)" in report
    assert "units, exact match of the answer" in report
    heldout = read_jsonl(data / "targets" / "units" / "heldout.jsonl")
    assert heldout[0]["prompt"].startswith("<|im_start|>")     # the model's chat template

    # the library, copied as the page says, scores the same pool as the run's NAIT did
    run_ok(["bash", "-c", commands[1]], copy, env)
    run_ok([sys.executable, "-m", "naitbench.select", "profile=units", "hydra.run.dir=.",
            "hydra.output_subdir=null", "select.method=nait", "select.targets=[units]",
            "select.name=nait-library",
            "selectors.nait.library=data/own/units/nait-library.npz"], copy, env)
    ids = [r["id"] for r in read_jsonl(data / "subsets" / "nait-units-r0.1-s0.jsonl")]
    assert [r["id"] for r in read_jsonl(data / "subsets" / "nait-library.jsonl")] == ids
