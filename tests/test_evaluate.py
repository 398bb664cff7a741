"""The lm-eval task pack on the tiny model: every task loads and runs, metrics and logged
samples have the expected shape, bits per byte is the loglikelihood of the reference given
the prompt, and the scoring helpers score what they should."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from naitbench.config import compose
from naitbench.data.prepare import prepare
from naitbench.evaluate import (
    EvalConfigError,
    available_tasks,
    evaluate,
    resolve_model,
    scores_dir,
)
from naitbench.evaluate.tasks import utils
from naitbench.io import read_jsonl, write_jsonl

LIMIT = 3
ALL_TARGETS = "[code,math,reasoning,knowledge,multilingual]"
TASK_TARGET = {"nb_humaneval_bpb": "code", "nb_gsm8k_bpb": "math", "nb_mmlu_mc": "knowledge",
               "nb_bbh_mc": "reasoning", "nb_gsm8k_em": "math", "nb_bbh_em": "reasoning",
               "nb_tydiqa_f1": "multilingual", "nb_humaneval_pass1": "code"}
RANGES = {"bits_per_byte": (0.0, math.inf)}  # every other metric is a rate in [0, 1]


PASSAGES = [("Paris is the capital of France.", "What is the capital of France?", "Paris"),
            ("The Nile flows north into the sea.", "Where does the Nile flow?", "north"),
            ("Tokyo hosted the 1964 Olympics.", "Which city hosted in 1964?", "Tokyo"),
            ("Water boils at 100 degrees.", "At what temperature does water boil?", "100"),
            ("Bees make honey from nectar.", "What do bees make honey from?", "nectar"),
            ("Mars is called the red planet.", "Which planet is the red planet?", "Mars")]


def tydiqa_rows(prefix: str, passages: list[tuple[str, str, str]]) -> list[dict]:
    """TyDiQA GoldP-shaped records (the data mirror has no TyDiQA copy)."""
    return [{"id": f"english-{prefix}{i}", "question": q, "context": c,
             "answers": {"text": [a], "answer_start": [c.index(a)]}}
            for i, (c, q, a) in enumerate(passages)]


@pytest.fixture(scope="module")
def full_data(tmp_path_factory, tiny_model_dir, data_root) -> Path:
    """Smoke data with every target prepared (small BBH/MMLU, a hand-made TyDiQA)."""
    root = tmp_path_factory.mktemp("all-targets")
    write_jsonl(root / "tydiqa-train.jsonl", tydiqa_rows("t", PASSAGES[:3]))
    write_jsonl(root / "tydiqa-dev.jsonl", tydiqa_rows("d", PASSAGES[3:]))
    cfg = compose([
        "profile=smoke", f"paths.data_dir={root / 'data'}", f"model.dir={tiny_model_dir}",
        f"paths.data_root={data_root}", f"data.prepared_targets={ALL_TARGETS}",
        "targets.reasoning.heldout_per_task=1",
        "targets.reasoning.tasks=[date_understanding,hyperbaton,snarks,navigate]",
        "targets.knowledge.heldout_size=6", "targets.knowledge.indomain_size=4",
        "targets.multilingual.source=local",
        f"targets.multilingual.local.train={root / 'tydiqa-train.jsonl'}",
        f"targets.multilingual.local.dev={root / 'tydiqa-dev.jsonl'}"])
    prepare(cfg)
    return root / "data"


def eval_cfg(**overrides) -> dict:
    cfg = OmegaConf.to_container(compose(["profile=smoke"]).eval)
    cfg.update(limit=LIMIT, max_gen_toks=8, batch_size=2, **overrides)
    return cfg


@pytest.fixture(scope="module")
def scored(full_data, tiny_model_dir, tmp_path_factory):
    """The whole pack in one lm-eval run (code execution switched on for HumanEval)."""
    out = tmp_path_factory.mktemp("scores")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ALLOW_CODE_EVAL", "1")
        metrics = evaluate(eval_cfg(allow_code_eval=True, num_fewshot={"nb_gsm8k_em": 1}),
                           tiny_model_dir, out, data_dir=full_data, tasks=available_tasks())
    return metrics, out


def test_pack_has_every_task():
    assert set(available_tasks()) == set(TASK_TARGET)


@pytest.mark.parametrize("task", sorted(TASK_TARGET))
def test_task_runs_with_metrics_and_samples(scored, full_data, task):
    metrics, out = scored
    (key,) = [k for k in metrics if k.startswith(f"{task}/")]
    metric = key.split("/", 1)[1]
    low, high = RANGES.get(metric, (0.0, 1.0))
    assert low < metrics[key] < high if metric == "bits_per_byte" else low <= metrics[key] <= high
    rows = [r for r in read_jsonl(out / "samples.jsonl") if r["task"] == task]
    heldout = {r["id"] for r in read_jsonl(full_data / "targets" / TASK_TARGET[task]
                                            / "heldout.jsonl")}
    assert len(rows) == LIMIT == len({r["id"] for r in rows})
    assert {r["id"] for r in rows} <= heldout
    assert [r["doc_id"] for r in rows] == list(range(LIMIT))
    assert all(r["metric"] == metric for r in rows)
    assert all(low <= r["value"] <= high for r in rows)
    if metric == "bits_per_byte":  # the aggregate is byte-weighted over the items
        weighted = -sum(r["loglikelihood"] for r in rows) / sum(r["bytes"] for r in rows)
        assert metrics[key] == pytest.approx(weighted / math.log(2))
    else:
        assert metrics[key] == pytest.approx(sum(r["value"] for r in rows) / LIMIT)


def test_results_files(scored):
    metrics, out = scored
    assert OmegaConf.load(out / "metrics.json") == metrics
    results = OmegaConf.load(out / "results.json")
    assert set(results["results"]) == set(TASK_TARGET)
    assert results["n-shot"]["nb_gsm8k_em"] == 1


def test_bits_per_byte_is_reference_given_prompt(scored, full_data, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = scored
    row = next(r for r in read_jsonl(out / "samples.jsonl") if r["task"] == "nb_humaneval_bpb")
    doc = next(r for r in read_jsonl(full_data / "targets/code/heldout.jsonl")
               if r["id"] == row["id"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # lm-eval scores the prompt's trailing newline with the continuation
    context = doc["prompt"].rstrip("\n")
    ids = tok(doc["prompt"] + doc["response"])["input_ids"]
    n_ctx = len(tok(context)["input_ids"])
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    ll = sum(float(logp[i - 1, ids[i]]) for i in range(n_ctx, len(ids)))
    assert row["loglikelihood"] == pytest.approx(ll, rel=1e-4)
    assert row["bytes"] == len(doc["response"].encode())
    assert row["value"] == pytest.approx(-ll / row["bytes"] / math.log(2), rel=1e-4)


def test_adapter_scored_through_peft_and_reruns_identical(prepared_smoke, tiny_model_dir, tmp_path):
    from naitbench.train import MODEL_SUBDIR, load_examples, train

    cfg = OmegaConf.to_container(compose(["profile=smoke"]).train)
    train({**cfg, "lr": 1e-2, "max_steps": 3}, tiny_model_dir,
          load_examples(prepared_smoke, "full")[:6], tmp_path / "run", seed=0)
    pretrained, adapter = resolve_model(tiny_model_dir, tmp_path / "run" / MODEL_SUBDIR)
    assert (pretrained, adapter) == (tiny_model_dir, tmp_path / "run" / MODEL_SUBDIR)
    assert resolve_model(tiny_model_dir, None) == (tiny_model_dir, None)
    task = ["nb_humaneval_bpb"]
    base = evaluate(eval_cfg(), tiny_model_dir, tmp_path / "base", data_dir=prepared_smoke,
                    tasks=task)
    tuned = evaluate(eval_cfg(), pretrained, tmp_path / "tuned", data_dir=prepared_smoke,
                     adapter_dir=adapter, tasks=task)
    assert tuned["nb_humaneval_bpb/bits_per_byte"] != base["nb_humaneval_bpb/bits_per_byte"]
    results = OmegaConf.load(tmp_path / "tuned" / "results.json")
    assert results["config"]["model_args"]["peft"] == str(adapter)
    evaluate(eval_cfg(), tiny_model_dir, tmp_path / "again", data_dir=prepared_smoke, tasks=task)
    for name in ("results.json", "metrics.json", "samples.jsonl"):  # same config, same bytes
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "base" / name).read_bytes()
    # what scored is recorded: fp32 unless bf16 autocast is asked for (the CPU keeps fp32
    # weights; on a GPU eval.dtype is the weights' dtype)
    assert results["compute"] == {"precision": "fp32", "device": "cpu"}
    evaluate(eval_cfg(dtype="bfloat16"), tiny_model_dir, tmp_path / "bf16",
             data_dir=prepared_smoke, tasks=task)
    assert OmegaConf.load(tmp_path / "bf16" / "results.json")["compute"] == {
        "precision": "bf16", "device": "cpu"}


def test_scores_dirs():
    assert scores_dir("data", None, 0) == Path("data/scores/base")
    assert scores_dir("data", "nait-code-0.1", 2) == Path("data/scores/nait-code-0.1/seed2")


def test_missing_target_and_unsafe_code_are_refused(prepared_smoke, tiny_model_dir, tmp_path,
                                                    monkeypatch):
    with pytest.raises(EvalConfigError, match=r"add 'knowledge' to data\.prepared_targets"):
        evaluate(eval_cfg(), tiny_model_dir, tmp_path, data_dir=prepared_smoke,
                 tasks=["nb_mmlu_mc"])
    with pytest.raises(EvalConfigError, match="unknown task"):
        evaluate(eval_cfg(), tiny_model_dir, tmp_path, data_dir=prepared_smoke,
                 tasks=["nb_nope"])
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    with pytest.raises(EvalConfigError, match="executes model-written code"):
        evaluate(eval_cfg(allow_code_eval=False), tiny_model_dir, tmp_path,
                 data_dir=prepared_smoke, tasks=["nb_humaneval_pass1"])
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL")
    with pytest.raises(EvalConfigError, match="HF_ALLOW_CODE_EVAL=1"):
        evaluate(eval_cfg(allow_code_eval=True), tiny_model_dir, tmp_path,
                 data_dir=prepared_smoke, tasks=["nb_humaneval_pass1"])
    assert not (tmp_path / "metrics.json").exists()


# ---------------------------------------------------------------- scoring helpers
def test_humaneval_execution(prepared_smoke, monkeypatch):
    doc = read_jsonl(prepared_smoke / "targets/code/heldout.jsonl")[0]
    solution, entry = doc["eval"]["canonical_solution"], doc["eval"]["entry_point"]
    full_def = f"```python\n{doc['eval']['prompt'].strip()}\n{solution}```"
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    assert utils.humaneval_pass_results(doc, [solution]) == {"pass@1": 1.0}
    assert utils.humaneval_pass_results(doc, [full_def]) == {"pass@1": 1.0}
    assert utils.humaneval_pass_results(doc, ["    return None\n"]) == {"pass@1": 0.0}
    assert utils.run_program("while True:\n    pass\n", timeout_s=1.0) is False
    assert f"check({entry})" in utils.humaneval_program(doc, solution)
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL")
    with pytest.raises(RuntimeError, match="HF_ALLOW_CODE_EVAL"):
        utils.humaneval_pass_results(doc, [solution])


@pytest.mark.parametrize(("generation", "answer"), [
    ("She pays 3 x 5 = $15.\nThe answer is 15.", "15"),
    ("The answer is $1,200.", "1200"),
    ("First 7, then 12.5", "12.5"),
    ("no numbers", ""),
    ("The answer is 18.0", "18"),
])
def test_gsm8k_answer(generation, answer):
    assert utils.gsm8k_answer(generation) == answer


def test_gsm8k_exact_match():
    doc = {"eval": {"final_answer": "1,200"}}
    assert utils.gsm8k_exact_match_results(doc, ["so the answer is 1200."]) == {
        "exact_match": 1.0}
    assert utils.gsm8k_exact_match_results(doc, ["The answer is 120."]) == {"exact_match": 0.0}


@pytest.mark.parametrize(("generation", "target", "correct"), [
    ("Let's think. So the answer is (B).", "(B)", True),
    ("(B) Tuesday", "(B)", True),
    ("So the answer is (C) Monday.", "(B)", False),
    ("Thinking...\nSo the answer is True.", "True", True),
    ("the answer is valid", "invalid", False),
    ("", "False", False),
])
def test_bbh_exact_match(generation, target, correct):
    doc = {"eval": {"target": target}}
    assert utils.bbh_exact_match_results(doc, [generation]) == {"exact_match": float(correct)}


def test_token_f1():
    assert utils.token_f1("The Paris", "paris") == 1.0
    assert utils.token_f1("north of Cairo", "north") == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))
    assert utils.token_f1("south", "north") == 0.0
    doc = {"eval": {"answers": ["Paris", "the city of Paris"]}}
    assert utils.tydiqa_f1_results(doc, ["city of Paris"]) == {"f1": 1.0}
