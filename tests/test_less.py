"""LESS-style baseline on the tiny model: exact per-sample gradients, projection, ranking."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from conftest import smoke_overrides

from baselines.less import (
    LESSSelector,
    SignSketch,
    adam_direction,
    per_sample_grads,
)
from naitbench.config import compose
from naitbench.io import read_jsonl
from naitbench.models.load import load_tokenizer
from naitbench.select.protocol import SelectionContext
from naitbench.select.rules import apply_rule
from naitbench.train.data import encode
from naitbench.train.loop import ResponseLoss, _build_model, collate_with_targets


def test_batched_per_sample_grads_match_per_example_autograd(prepared_smoke, tiny_model_dir):
    cfg = compose(["profile=smoke"])
    model = _build_model(cfg.train, tiny_model_dir).eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    pool = read_jsonl(prepared_smoke / "pool" / "pool.jsonl")[:3]
    pairs = [(r["prompt"], r["response"]) for r in pool]
    grads, tokens = per_sample_grads(model, tokenizer, pairs, max_length=96, batch_size=2)
    encoded = [{k: v[:96] for k, v in encode(tokenizer, p, r).items()} for p, r in pairs]
    counts = torch.tensor([sum(x != -100 for x in e["labels"][1:]) for e in encoded])
    params = [p for p in model.parameters() if p.requires_grad]
    summed = torch.autograd.grad(
        ResponseLoss(model)(**collate_with_targets(encoded, tokenizer.pad_token_id)), params)
    flat = torch.cat([g.flatten() for g in summed])
    for row, e in enumerate(encoded):                  # each equals its own unpadded autograd
        alone = torch.autograd.grad(model(input_ids=torch.tensor([e["input_ids"]]),
                                          labels=torch.tensor([e["labels"]])).loss, params)
        torch.testing.assert_close(grads[row], torch.cat([g.flatten() for g in alone]),
                                   rtol=1e-4, atol=1e-6)
    torch.testing.assert_close((grads * counts[:, None]).sum(0), flat, rtol=1e-4, atol=1e-5)
    assert grads.shape == (3, flat.numel()) and tokens == sum(len(e["input_ids"])
                                                              for e in encoded)
    sketch = SignSketch(flat.numel(), 64, seed=0)       # applied batch by batch, same result
    projected, _ = per_sample_grads(model, tokenizer, pairs, max_length=96, batch_size=2,
                                    transform=sketch)
    torch.testing.assert_close(projected, sketch(grads), rtol=1e-4, atol=1e-6)


def test_projection_preserves_inner_products_and_adam_direction():
    x = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0))
    p = SignSketch(3000, 4096, seed=1)(x)
    gram, projected = x @ x.T, p @ p.T
    assert torch.allclose(projected, gram, atol=0.1 * gram.diagonal().mean())
    assert torch.equal(p, SignSketch(3000, 4096, seed=1)(x))
    assert not torch.equal(p, SignSketch(3000, 4096, seed=2)(x))
    g = torch.tensor([[2.0, -1.0]])
    d = adam_direction(g, torch.zeros(2), torch.zeros(2), 0, (0.9, 0.999), 0.0)
    torch.testing.assert_close(d, torch.tensor([[1.0, -1.0]]))      # first step: sign(g)
    sim = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.2]])
    np.testing.assert_allclose(apply_rule(sim, "subtask_max_mean", groups=["a", "b", "a"]),
                               [0.75, 1.0])


def test_target_copies_rank_first(tmp_path, prepared_smoke, tiny_model_dir, data_root):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_smoke, data_dir)
    cfg = compose([*smoke_overrides(data_dir, tiny_model_dir, data_root),
                   "train.lora.dropout=0.0"])
    pool = read_jsonl(data_dir / "pool" / "pool.jsonl")[:12]
    code = read_jsonl(data_dir / "targets" / "code" / "indomain.jsonl")[:3]
    planted = [{**pool[0], "id": f"planted{i}", "prompt": r["prompt"],
                "response": r["response"]} for i, r in enumerate(code)]
    ctx = SelectionContext(cfg=cfg, pool=pool + planted, targets={"code": code},
                           data_dir=data_dir, model_dir=tiny_model_dir, seed=0)
    selector = LESSSelector("less", warmup_ratio=0.5, warmup_epochs=2, proj_dim=512,
                            max_length=256, train={"batch_size": 2, "grad_accum": 1,
                                                   "lr": 1e-3, "checkpoint_every": 0})
    scores = selector.run(ctx)
    assert set(np.argsort(-scores)[:3]) == {12, 13, 14}
    assert ctx.cost["backward_tokens"] > 0
    again = SelectionContext(cfg=cfg, pool=pool + planted, targets={"code": code},
                             data_dir=data_dir, model_dir=tiny_model_dir, seed=0)
    np.testing.assert_array_equal(selector.run(again), scores)   # reuses stored features
    assert again.cost["backward_tokens"] == 0
