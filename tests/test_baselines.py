"""Reference baselines on the tiny model: length, perplexity, IFD, embedding kNN."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import smoke_overrides

from baselines.ifd import IFDSelector, ifd_scores
from baselines.knn import KNNSelector
from baselines.perplexity import PerplexitySelector
from baselines.selectit import (
    SelectITSelector,
    expected_rating,
    model_weighted,
    rating_probabilities,
    sentence_score,
)
from naitbench.config import compose
from naitbench.io import read_jsonl
from naitbench.models.load import load_model, load_tokenizer
from naitbench.models.prepare import prepare_model
from naitbench.select.__main__ import select
from naitbench.select.losses import response_losses
from naitbench.select.protocol import SelectionContext
from naitbench.train.data import encode


@pytest.fixture
def data_dir(tmp_path, prepared_smoke):
    copy = tmp_path / "data"
    shutil.copytree(prepared_smoke, copy)
    return copy


def _ctx(data_dir, tiny_model_dir, data_root, n=12, targets=()):
    cfg = compose(smoke_overrides(data_dir, tiny_model_dir, data_root))
    return SelectionContext(
        cfg=cfg, pool=read_jsonl(data_dir / "pool" / "pool.jsonl")[:n],
        targets={t: read_jsonl(data_dir / "targets" / t / "indomain.jsonl") for t in targets},
        data_dir=data_dir, model_dir=tiny_model_dir, seed=0)


def _direct_loss(model, tokenizer, prompt, response):
    """One unpadded sample through the model's own loss (mean over shifted labels)."""
    enc = encode(tokenizer, prompt, response)
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([enc["input_ids"]]),
                           labels=torch.tensor([enc["labels"]])).loss)


def test_batched_losses_and_ifd_match_per_sample_computation(data_dir, tiny_model_dir,
                                                             data_root):
    ctx = _ctx(data_dir, tiny_model_dir, data_root, n=7)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    with_prompt = [(r["prompt"], r["response"]) for r in ctx.pool]
    alone = [("", r["response"]) for r in ctx.pool]
    batched, tokens = response_losses(model, tokenizer, with_prompt, max_length=4096,
                                      batch_size=3)
    direct = np.array([_direct_loss(model, tokenizer, p, r) for p, r in with_prompt])
    direct_alone = np.array([_direct_loss(model, tokenizer, p, r) for p, r in alone])
    np.testing.assert_allclose(batched, direct, rtol=1e-4)
    assert tokens == sum(len(encode(tokenizer, p, r)["input_ids"]) for p, r in with_prompt)
    scores = IFDSelector("ifd", max_length=4096, batch_size=4, drop_above_one=False).run(ctx)
    np.testing.assert_allclose(scores, direct / direct_alone, rtol=1e-4)
    assert ctx.cost["forward_tokens"] > tokens and ctx.cost["wall_s"] > 0
    assert list(ifd_scores(np.array([2.0, 3.0]), np.array([1.0, 2.0]))) == [2.0, 1.5]


def test_ifd_above_one_ranks_last():
    kept = IFDSelector("ifd")
    assert kept.drop_above_one
    ifd = np.array([0.5, 1.5, 0.9])
    assert list(np.argsort(-np.where(ifd > 1.0, -ifd, ifd))) == [2, 0, 1]


def test_perplexity_direction_follows_prefer(data_dir, tiny_model_dir, data_root):
    ctx = _ctx(data_dir, tiny_model_dir, data_root, n=6)
    low = PerplexitySelector("perplexity", prefer="low").run(ctx)
    high = PerplexitySelector("perplexity", prefer="high").run(ctx)
    np.testing.assert_array_equal(low, -high)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    direct = [_direct_loss(model, tokenizer, r["prompt"], r["response"]) for r in ctx.pool]
    np.testing.assert_allclose(high, direct, rtol=1e-4)
    with pytest.raises(ValueError, match="prefer='middle'"):
        PerplexitySelector("perplexity", prefer="middle")


def test_length_subset_keeps_the_longest_responses(data_dir, tiny_model_dir, data_root):
    cfg = compose([*smoke_overrides(data_dir, tiny_model_dir, data_root), "selector=length",
                   "ratio=0.2"])
    pool = read_jsonl(data_dir / "pool" / "pool.jsonl")
    subset = select(cfg)
    kept = read_jsonl(subset)
    threshold = sorted((r["n_response_tokens"] for r in pool), reverse=True)[len(kept) - 1]
    lengths = {r["id"]: r["n_response_tokens"] for r in pool}
    assert len(kept) == round(0.2 * len(pool))
    assert all(lengths[r["id"]] >= threshold for r in kept)
    scores = read_jsonl(subset.with_name(subset.stem + ".scores.jsonl"))
    assert all(lengths[r["id"]] == r["score"] for r in scores)


def test_knn_planted_target_copies_rank_first_with_cosine_one(data_dir, tiny_model_dir,
                                                              data_root):
    ctx = _ctx(data_dir, tiny_model_dir, data_root, n=20, targets=("code",))
    code = ctx.targets["code"]
    planted = [{**ctx.pool[0], "id": f"planted{i}", "instruction": r["instruction"],
                "input": r["input"], "response": r["response"]} for i, r in enumerate(code[:3])]
    ctx.pool = ctx.pool + planted
    scores = KNNSelector("knn").run(ctx)
    assert set(np.argsort(-scores)[:3]) == {20, 21, 22}
    np.testing.assert_allclose(scores[20:], 1.0, atol=1e-5)
    assert (scores[:20] < 1.0 - 1e-4).all() and ctx.cost["forward_tokens"] > 0
    with pytest.raises(ValueError, match=r"rule='median': use one of \[.*'max'"):
        KNNSelector("knn", rule="median")


def test_selectit_levels(data_dir, tiny_model_dir, data_root, tmp_path):
    ctx = _ctx(data_dir, tiny_model_dir, data_root, n=5)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    texts = [f"{r['instruction']}\nScore 1-5:" for r in ctx.pool]
    probs, _ = rating_probabilities(model, tokenizer, texts, 5, max_length=512, batch_size=2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    alone, _ = rating_probabilities(model, tokenizer, texts[3:4], 5, max_length=512,
                                    batch_size=1)
    np.testing.assert_allclose(probs[3], alone[0], atol=1e-5)     # padding does not leak
    assert expected_rating(probs).min() >= 1.0 and expected_rating(probs).max() <= 5.0
    ratings = np.array([[1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_allclose(sentence_score(ratings, 0.5), [2.0 / 1.5, 2.0])
    np.testing.assert_allclose(model_weighted([np.array([1.0]), np.array([4.0])], [1, 3]),
                               [3.25])
    other = tmp_path / "tiny-seed1"
    prepare_model(compose(["profile=smoke", f"model.dir={other}", "model.seed=1",
                            "model.layers=2"]).model)
    prompts = ["{instruction}\n{response}\nRate 1-{k}:", "Rate 1-{k}. {response}\nRating:"]
    both = SelectITSelector("selectit", prompts=prompts, k=4, alpha=0.3,
                            models=[None, str(other)]).run(ctx)
    singles = [SelectITSelector("selectit", prompts=prompts, k=4, alpha=0.3,
                                models=[m]).run(ctx) for m in (None, str(other))]
    sizes = [sum(p.numel() for p in load_model(d).parameters()) for d in (tiny_model_dir, other)]
    assert sizes[0] != sizes[1]
    np.testing.assert_allclose(both, model_weighted(singles, sizes))
    with pytest.raises(ValueError, match="distinct"):
        SelectITSelector("selectit", prompts=["a", "a"])


@pytest.mark.parametrize("name", ["length", "perplexity", "ifd", "knn", "selectit"])
def test_baseline_configs_instantiate(name, tmp_path):
    from hydra.utils import instantiate

    cfg = compose(["profile=smoke", f"selector={name}", f"paths.data_dir={tmp_path}"])
    selector = instantiate(cfg.selector)
    assert selector.name == name
    if name == "selectit":
        assert selector.models == [None, cfg.raters.second.dir]     # base model, then rater
        assert cfg.raters.second.dir != cfg.model.dir
        assert compose(["selector=selectit"]).selector.models[1].endswith("gemma3-270m")
