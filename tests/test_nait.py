"""NAIT's two recipes pinned to their equations, on synthetic activations with planted
directions: the published Algorithm 1 against a direct computation of its four steps, and
the suite variant's sign-free directions under in-domain resampling."""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from naitbench.nait.library import build_library, score_pool
from naitbench.nait.selector import NAITSelector
from naitbench.select.protocol import SelectionContext
from naitbench.select.stability import jaccard, mean_pairwise_jaccard, stability, top_ids

LAYERS, DIM = 3, 8


def _write_store(path: Path, ids: list[str], arrays: dict[str, np.ndarray]) -> None:
    """A feature store directory as ensure_features writes it (one shard per spec)."""
    path.mkdir(parents=True)
    files = {}
    for name, array in arrays.items():
        file = f"{name}-00000.npy"
        np.save(path / file, array.astype(np.float32))
        files[name] = {"file": file, "sha256": hashlib.sha256((path / file).read_bytes())
                       .hexdigest()}
    index = {"ids": ids, "shard_size": len(ids), "model_layers": LAYERS,
             "shards": [{"start": 0, "end": len(ids), "files": files}]}
    (path / "index.json").write_text(json.dumps(index))


def _context(tmp_path: Path, pool: dict[str, np.ndarray],
             target: dict[str, np.ndarray]) -> SelectionContext:
    """A selection context over synthetic stores for the pool and a `code` target."""
    from naitbench.features import FeatureStore

    stores = {}
    for name, arrays in (("pool", pool), ("code", target)):
        n = len(next(iter(arrays.values())))
        _write_store(tmp_path / name, [f"{name}{i}" for i in range(n)], arrays)
        stores["store", name] = FeatureStore(tmp_path / name)
    n_pool, n_target = len(next(iter(pool.values()))), len(next(iter(target.values())))
    cfg = OmegaConf.create({"features": {"specs": sorted(pool)}, "select": {"name": None}})
    return SelectionContext(cfg=cfg, pool=[{"id": f"pool{i}"} for i in range(n_pool)],
                            targets={"code": [{"id": f"code{i}"} for i in range(n_target)]},
                            data_dir=tmp_path, model_dir=tmp_path, seed=0,
                            save_artefacts=False, loaded=stores)


def _drift_case(seed: int = 0, n_pool: int = 300, n_target: int = 40):
    """first/last-token activations; the target's drifts spread along a planted direction u
    per layer (with a mean offset along +u in layers 0, 2 and -u in layer 1)."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(DIM, LAYERS)))[0].T          # one unit vector per layer
    offset = np.array([1.5, -1.5, 1.0])[:, None] * u
    first_t = rng.normal(size=(n_target, LAYERS, DIM))
    spread = rng.normal(size=(n_target, LAYERS, 1)) * 3.0
    last_t = first_t + offset + spread * u + 0.3 * rng.normal(size=(n_target, LAYERS, DIM))
    first_p = rng.normal(size=(n_pool, LAYERS, DIM))
    last_p = first_p + rng.normal(size=(n_pool, LAYERS, DIM))
    pool = {"residual.first": first_p, "residual.last": last_p}
    target = {"residual.first": first_t, "residual.last": last_t}
    return pool, target, u


def direct_published(pool: dict, target: dict) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1 step by step, written independently of naitbench.nait: drifts, the first
    principal component (eigenvector of the covariance), the sign rule, the summed dot."""
    drift_t = target["residual.last"].astype(np.float32).astype(np.float64) \
        - target["residual.first"].astype(np.float32).astype(np.float64)
    drift_p = pool["residual.last"].astype(np.float32).astype(np.float64) \
        - pool["residual.first"].astype(np.float32).astype(np.float64)
    directions, scores = [], np.zeros(len(drift_p))
    for layer in range(drift_t.shape[1]):
        d = drift_t[:, layer]
        covariance = np.cov(d, rowvar=False)
        values, vectors = np.linalg.eigh(covariance)
        v = vectors[:, np.argmax(values)]
        if d.mean(axis=0) @ v < 0:
            v = -v
        directions.append(v)
        scores += drift_p[:, layer] @ v
    return np.array(directions), scores


def test_published_recipe_is_algorithm_one(tmp_path):
    pool, target, u = _drift_case()
    ctx = _context(tmp_path, pool, target)
    scores = NAITSelector().score(ctx)                   # the defaults are the published recipe
    directions, expected = direct_published(pool, target)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
    # the planted directions are found and oriented towards the target's mean drift
    for layer, sign in enumerate([1, -1, 1]):
        assert directions[layer] @ u[layer] * sign > 0.99


def test_the_sign_rule_follows_the_target_mean_drift_not_the_pool(tmp_path):
    pool, target, u = _drift_case(seed=1)
    # a pool whose drifts sit opposite the target's mean must not orient the directions
    pool = {**pool, "residual.last": pool["residual.last"] - 5.0 * np.sign([1, -1, 1])[:, None]
            * u}
    library = build_library(pool["residual.last"] - pool["residual.first"],
                            target["residual.last"] - target["residual.first"],
                            list(range(LAYERS)), k=1, centre="self")
    mean_drift = (target["residual.last"] - target["residual.first"]).mean(axis=0)
    for layer in range(LAYERS):
        assert library.directions[layer, 0] @ mean_drift[layer] > 0
    # negating every in-domain drift negates every direction (and so every score)
    flipped = build_library(pool["residual.last"] - pool["residual.first"],
                            target["residual.first"] - target["residual.last"],
                            list(range(LAYERS)), k=1, centre="self")
    np.testing.assert_allclose(flipped.directions, -library.directions, atol=1e-9)


def test_the_principal_component_is_of_drifts_centred_on_their_own_mean():
    rng = np.random.default_rng(2)
    # a large common drift along e0 and the spread along e1: uncentred, e0 would come first
    drifts = 0.05 * rng.normal(size=(50, 1, DIM))
    drifts[:, 0, 0] += 10.0
    drifts[:, 0, 1] += 0.5 + 2.0 * rng.normal(size=50)
    library = build_library(rng.normal(size=(20, 1, DIM)), drifts, [0], k=1, centre="self")
    assert library.directions[0, 0, 1] > 0.99            # +e1: the mean's e1 part is +0.5
    uncentred = np.linalg.svd(drifts[:, 0], full_matrices=False)[2][0]
    assert abs(uncentred[0]) > 0.9                        # what the centring rules out


def test_scores_are_dot_products_summed_over_every_layer():
    pool, target, _ = _drift_case(seed=3)
    drift_p = pool["residual.last"] - pool["residual.first"]
    drift_t = target["residual.last"] - target["residual.first"]
    library = build_library(drift_p, drift_t, list(range(LAYERS)), k=1)
    per_layer = [score_pool(build_library(drift_p[:, [i]], drift_t[:, [i]], [i], k=1),
                            drift_p[:, [i]]) for i in range(LAYERS)]
    np.testing.assert_allclose(score_pool(library, drift_p), np.sum(per_layer, axis=0))
    np.testing.assert_allclose(per_layer[0], drift_p[:, 0] @ library.directions[0, 0])
    # the candidate's drift is not normalised: doubling it doubles its score
    doubled = score_pool(library, 2 * drift_p)
    np.testing.assert_allclose(doubled, 2 * score_pool(library, drift_p))


def _variant_case(seed: int = 4, n_pool: int = 400, n_target: int = 60):
    """MLP-mean features: the target sits off the pool mean along e0 and spreads symmetrically
    along e1 and e2; the pool holds candidates on both sides of that spread."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(n_pool, LAYERS, DIM))
    target = 0.5 * rng.normal(size=(n_target, LAYERS, DIM))
    target[..., 0] += 5.0
    target[..., 1] += 2.0 * rng.normal(size=(n_target, LAYERS))
    target[..., 2] += 1.0 * rng.normal(size=(n_target, LAYERS))
    return {"mlp.mean": pool}, {"mlp.mean": target}


def _variant(rest: str) -> NAITSelector:
    return NAITSelector(name="nait_variant", site="mlp", feature="mean", span="response",
                        layers=None, k=3, centre="pool", scoring="cosine", rest=rest)


def test_variant_scores_do_not_depend_on_the_signs_of_directions_two_to_k():
    pool, target = _variant_case()
    library = build_library(pool["mlp.mean"], target["mlp.mean"], list(range(LAYERS)), k=3,
                            centre="pool")
    scores = score_pool(library, pool["mlp.mean"], "cosine", "absolute")
    library.directions[:, 1:] *= -1
    np.testing.assert_allclose(score_pool(library, pool["mlp.mean"], "cosine", "absolute"),
                               scores)
    signed_before = score_pool(library, pool["mlp.mean"], "cosine", "signed")
    library.directions[:, 1:] *= -1
    assert not np.allclose(score_pool(library, pool["mlp.mean"], "cosine", "signed"),
                           signed_before)              # the signed rule does depend on them


def test_variant_is_sign_stable_under_in_domain_resampling(tmp_path):
    pool, target = _variant_case()
    ctx = _context(tmp_path, pool, target)
    draws, x = 20, pool["mlp.mean"] - pool["mlp.mean"].mean(axis=0)
    firsts, terms = [], {"signed": [], "absolute": []}
    for draw in range(1, draws + 1):
        rows = ctx.resampled(draw).indomain_rows["code"]
        library = build_library(pool["mlp.mean"], target["mlp.mean"][rows],
                                list(range(LAYERS)), k=3, centre="pool")
        firsts.append(library.directions[:, 0])
        cosine = np.einsum("nld,ld->nl", x, library.directions[:, 1]) / np.linalg.norm(x, axis=2)
        terms["signed"].append(cosine)
        terms["absolute"].append(np.abs(cosine))
    agree = [np.sign(np.sum(a * b, axis=1)) for a, b in combinations(firsts, 2)]
    assert np.all(np.array(agree) > 0)                 # the first direction never flips
    correlations = {rule: np.array([np.corrcoef(a[:, layer], b[:, layer])[0, 1]
                                    for a, b in combinations(t, 2) for layer in range(LAYERS)])
                    for rule, t in terms.items()}
    # the second direction's term: oriented by noise under the published sign rule (it
    # rewards one half of the target's spread in one draw, the other half in the next) ...
    assert np.mean(correlations["signed"] < 0) > 0.1
    assert np.all(correlations["absolute"] > 0)        # ... and never reversed once sign-free
    # through the selector and the shared resampling: the variant's scores of two draws agree
    scores = [_variant("absolute").score(ctx.resampled(d)) for d in (1, 2)]
    assert np.corrcoef(*scores)[0, 1] > 0.9


def test_stability_is_the_mean_pairwise_jaccard_of_the_draws(tmp_path):
    pool, target, _ = _drift_case(seed=5)
    ctx = _context(tmp_path, pool, target)
    selector = NAITSelector()
    record = stability(selector, ctx, 5, 0.1)
    ids = [r["id"] for r in ctx.pool]
    sets = [top_ids(ids, selector.score(ctx.resampled(d)), 0.1) for d in range(1, 6)]
    by_hand = np.mean([jaccard(a, b) for a, b in combinations(sets, 2)])
    assert record["mean_jaccard"] == pytest.approx(by_hand)
    assert record["draws"] == 5 and record["ratio"] == 0.1
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least two draws"):
        mean_pairwise_jaccard([{"a"}])


def test_options_outside_the_recipe_fail_with_the_key():
    for key, value in (("site", "attention"), ("feature", "max"), ("span", "prompt"),
                       ("centre", "median"), ("scoring", "l2"), ("rest", "squared")):
        with pytest.raises(ValueError, match=f"selector.{key}="):
            NAITSelector(**{key: value})


def test_a_saved_library_scores_another_pool(tmp_path):
    """A library built on one pool and saved scores another pool exactly as building it
    again would (centre self: candidates are not offset); one of another width or built on
    other layers is refused by name."""
    from naitbench.config import ConfigError

    pool, target, _ = _drift_case()
    built = _context(tmp_path / "first", pool, target)
    library = NAITSelector()._library(built, "code")
    library.save(tmp_path / "lib" / "code.npz")
    other, _, _ = _drift_case(seed=5, n_pool=120)
    ctx = _context(tmp_path / "second", other, target)
    expected = score_pool(library, other["residual.last"] - other["residual.first"])
    np.testing.assert_allclose(NAITSelector(library=str(tmp_path / "lib")).score(ctx), expected,
                               rtol=1e-5, atol=1e-5)   # the stores hold float32
    with pytest.raises(ConfigError, match=r"set selectors\.nait\.layers to them"):
        NAITSelector(library=str(tmp_path / "lib" / "code.npz"), layers=[0, 1]).score(ctx)
    with pytest.raises(ConfigError, match=r"missing\.npz does not exist"):
        NAITSelector(library=str(tmp_path / "missing.npz")).score(ctx)
    narrow = {k: v[:, :, :4] for k, v in other.items()}
    with pytest.raises(ConfigError, match="only through the model that built it"):
        NAITSelector(library=str(tmp_path / "lib")).score(
            _context(tmp_path / "third", narrow, {k: v[:, :, :4] for k, v in target.items()}))
