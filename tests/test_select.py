"""The selector protocol, NAIT's math, subsets, the CLI and its sweeps (tiny model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, smoke_overrides
from hydra.errors import MissingConfigException

from naitbench.config import ConfigError, compose
from naitbench.features import FORWARD_PASSES
from naitbench.io import read_jsonl, write_jsonl
from naitbench.nait.library import build_library, score_pool
from naitbench.nait.selector import resolve_layers
from naitbench.select.__main__ import select
from naitbench.select.aggregate import rank_scores, zscore_mean
from naitbench.select.rules import apply_rule, round_robin
from naitbench.select.subset import TIE_DIGITS, budget, rounded, top_ratio, write_subset


@pytest.fixture
def data_dir(tmp_path, prepared_smoke):
    """A private copy of the prepared smoke data (selection writes into it)."""
    copy = tmp_path / "data"
    shutil.copytree(prepared_smoke, copy)
    return copy


def _plant_code_copies(data_dir, n: int) -> None:
    """Append copies of the first `n` code in-domain samples to the pool as planted{i}."""
    pool = read_jsonl(data_dir / "pool" / "pool.jsonl")
    code = read_jsonl(data_dir / "targets" / "code" / "indomain.jsonl")
    planted = [{**pool[0], "id": f"planted{i}", "prompt": r["prompt"],
                "response": r["response"]} for i, r in enumerate(code[:n])]
    write_jsonl(data_dir / "pool" / "pool.jsonl", pool + planted)


def _cfg(data_dir, tiny_model_dir, data_root, *extra):
    return compose([*smoke_overrides(data_dir, tiny_model_dir, data_root), *extra])


def test_pca_directions_are_oriented_towards_the_target_mean():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(200, 1, 5))
    target = rng.normal(size=(20, 1, 5)) * 0.1 - np.array([0, 0, 3.0, 0, 0])
    library = build_library(pool, target, [0], k=2, centre="pool")   # the variant's
    first = library.directions[0, 0]
    assert abs(first[2]) > 0.99 and first[2] < 0        # the target sits at -3 on axis 2
    centred_mean = target[:, 0].mean(0) - pool[:, 0].mean(0)
    assert np.all(library.directions[0] @ centred_mean >= 0)
    assert library.weights[0].sum() == pytest.approx(1.0)
    assert library.explained[0, 0] > 0.9


def test_variant_score_is_the_weighted_cosine_summed_over_layers():
    rng = np.random.default_rng(1)
    pool, target = rng.normal(size=(30, 2, 4)), rng.normal(size=(6, 2, 4)) + 1.0
    library = build_library(pool, target, [3, 5], k=2, centre="pool")
    scores = score_pool(library, pool, scoring="cosine", rest="signed")
    x = pool[7, 1] - pool[:, 1].mean(0)
    by_hand = sum(w * (x @ v) / np.linalg.norm(x)
                  for w, v in zip(library.weights[1], library.directions[1], strict=True))
    x0 = pool[7, 0] - pool[:, 0].mean(0)
    by_hand0 = sum(w * (x0 @ v) / np.linalg.norm(x0)
                   for w, v in zip(library.weights[0], library.directions[0], strict=True))
    assert scores[7] == pytest.approx(by_hand + by_hand0)


def test_planted_candidates_rank_first_on_synthetic_activations():
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(300, 3, 16))
    target = rng.normal(size=(12, 3, 16)) * 0.3 + 2.0 * np.eye(16)[4]
    pool[:10] = rng.normal(size=(10, 3, 16)) * 0.3 + 2.0 * np.eye(16)[4]
    scores = score_pool(build_library(pool, target, [0, 1, 2], k=3, centre="pool"), pool,
                        scoring="cosine", rest="absolute")
    assert set(np.argsort(-scores)[:10]) == set(range(10))


def test_layers_resolve_from_fractions_and_fail_outside_the_model():
    assert resolve_layers([0.5, 0.75, 3], 4) == [2, 3]
    assert resolve_layers([0.5, 0.625, 0.75, 0.875], 30) == [15, 18, 22, 26]
    with pytest.raises(ConfigError, match="layer 9 is outside the model, which has 4 layers"):
        resolve_layers([9], 4)


def test_top_ratio_budget_and_ties():
    assert budget(0.1, 985) == 99 and budget(0.001, 50) == 1 and budget(1.0, 7) == 7
    ids = ["d", "b", "c", "a"]
    assert top_ratio(ids, np.array([1.0, 2.0, 2.0, 2.0]), 0.75) == [3, 1, 2]


def test_float_noise_in_scores_cannot_change_the_ids_or_their_order():
    rng = np.random.default_rng(0)
    ids = [f"id{i:03d}" for i in range(200)]
    scores = rng.normal(size=200)
    scores[[5, 17, 40, 41]] = scores[3]          # exact ties, as analytically equal scores
    scores[[60, 61]] = -0.25, 1.0 - 1e-13         # a round value and a value next to one
    kept = top_ratio(ids, scores, 0.5)
    for trial in range(20):                       # last-bit noise of another machine
        noise = np.random.default_rng(trial).uniform(-1e-12, 1e-12, size=200)
        assert top_ratio(ids, scores + noise, 0.5) == kept
    assert [ids[i] for i in kept if i in (3, 5, 17, 40, 41)] == [
        "id003", "id005", "id017", "id040", "id041"]          # ties go by id
    # real differences (beyond the rounding) still decide the order
    assert top_ratio(["b", "a"], np.array([0.5, 0.5 + 10 ** -(TIE_DIGITS - 1)]), 1.0) == [1, 0]
    assert top_ratio(["a", "b"], np.array([2.0e-9, 3.0e-9]), 0.5) == [1]
    assert rounded(1 - 1e-12) == rounded(1 + 1e-12) == 1.0 and rounded(0.0) == 0.0


def test_subset_file_holds_only_the_ranked_ids(tmp_path):
    ids = ["a", "b", "c", "d"]
    scores = np.array([0.1, 0.4, 0.3, 0.2])
    path = write_subset(tmp_path, "toy", ids, scores, top_ratio(ids, scores, 0.5),
                        {"method": "toy"})
    assert path.read_text() == '{"id": "b"}\n{"id": "c"}\n'
    assert read_jsonl(tmp_path / "toy.scores.jsonl") == [
        {"id": i, "score": s} for i, s in zip(ids, scores.tolist(), strict=True)]
    manifest = json.loads((tmp_path / "toy.manifest.json").read_text())
    assert manifest["n_selected"] == 2 and "significant digits" in manifest["tie_break"]
    import naitbench
    assert manifest["versions"]["naitbench"] == naitbench.__version__
    assert manifest["versions"]["numpy"] == np.__version__
    assert {"python", "torch", "transformers"} <= set(manifest["versions"])


def test_float_noise_changes_the_scores_file_but_not_the_subset_file(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"id{i:02d}" for i in range(50)]
    scores = rng.normal(size=50)
    written = {}
    for run, noisy in (("a", scores), ("b", scores * (1 + 1e-13))):   # another machine
        out = tmp_path / run
        write_subset(out, "x", ids, noisy, top_ratio(ids, noisy, 0.2), {"method": "x"})
        written[run] = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    assert written["a"]["x.jsonl"] == written["b"]["x.jsonl"]
    assert written["a"]["x.scores.jsonl"] != written["b"]["x.scores.jsonl"]


def test_aggregations():
    assert np.allclose(zscore_mean([np.array([1.0, 2, 3]), np.array([10.0, 30, 20])]),
                       [-1.2247449, 0.6123724, 0.6123724])
    sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.0, 0.6]])
    assert list(apply_rule(sim, "max")) == [0.9, 0.8, 0.7, 0.6]
    assert round_robin(sim, 3) == [0, 2, 1]
    assert round_robin(sim, 4) == [0, 2, 1, 3]
    assert list(rank_scores([2, 0], 3)) == [1.0, -1.0, 2.0]


def test_round_robin_fills_the_budget_with_fair_turns():
    rng = np.random.default_rng(3)
    sim = rng.random((40, 5))
    picks = round_robin(sim, 23)
    assert len(picks) == len(set(picks)) == 23
    # column j picks on turns j, j+5, ...: each of its picks is its best remaining candidate
    taken: set[int] = set()
    for turn, pick in enumerate(picks):
        column = turn % 5
        remaining = [c for c in range(40) if c not in taken]
        assert pick == max(remaining, key=lambda c: (sim[c, column], -c))
        taken.add(pick)


def test_nait_subset_is_deterministic_and_a_layer_sweep_needs_no_forward_pass(
        data_dir, tiny_model_dir, data_root):
    first = select(_cfg(data_dir, tiny_model_dir, data_root))
    content = {p.name: p.read_bytes() for p in first.parent.glob("*.jsonl")}
    manifest_path = first.parent / "nait-code-r0.1-s0.manifest.json"
    first_manifest = json.loads(manifest_path.read_text())
    forward = FORWARD_PASSES["batches"]
    for overrides in (["selector.layers=[1]", "ratio=0.2"], ["selector.layers=[0,3]"], []):
        select(_cfg(data_dir, tiny_model_dir, data_root, *overrides))
    assert FORWARD_PASSES["batches"] == forward          # features came from the store
    assert {p.name: p.read_bytes() for p in first.parent.glob("*.jsonl")
            if p.name in content} == content              # same config -> same bytes
    manifest = json.loads(manifest_path.read_text())
    assert {k: v for k, v in manifest.items() if k != "cost"} == {
        k: v for k, v in first_manifest.items() if k != "cost"}   # only timings differ
    assert manifest["n_selected"] == 5 and manifest["targets"] == ["code"]
    assert manifest["cost"]["shared"] and manifest["pool_hash"]
    assert (data_dir / "libraries" / "nait-code-r0.1-s0" / "code.npz").exists()


def test_planted_pool_records_rank_first_with_the_real_model(data_dir, tiny_model_dir,
                                                             data_root):
    # the variant scores similarity to the target's features: copies of its samples win
    _plant_code_copies(data_dir, 5)
    subset = select(_cfg(data_dir, tiny_model_dir, data_root, "selector=nait_variant",
                         "ratio=0.1"))
    assert {r["id"] for r in read_jsonl(subset)} >= {f"planted{i}" for i in range(5)}


def test_the_cli_selects_with_the_published_equations(data_dir, tiny_model_dir, data_root):
    from test_nait import direct_published

    from naitbench.features import FeatureStore

    cfg = _cfg(data_dir, tiny_model_dir, data_root)
    subset = select(cfg)
    stores = {name: FeatureStore(next((data_dir / "features").glob(f"{name}-*")))
              for name in ("pool", "code")}
    features = {name: {spec: store.load(spec) for spec in ("residual.first", "residual.last")}
                for name, store in stores.items()}
    _, expected = direct_published(features["pool"], features["code"])
    scores = [r["score"] for r in read_jsonl(subset.with_suffix(".scores.jsonl"))]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    manifest = json.loads(subset.with_suffix(".manifest.json").read_text())
    assert manifest["method"] == "nait" and manifest["selector"]["site"] == "residual"
    stability = manifest["stability"]
    assert stability["draws"] == 20 and 0 <= stability["min_jaccard"] <= stability[
        "mean_jaccard"] <= 1


def test_multi_target_and_random_subsets(data_dir, tiny_model_dir, data_root):
    general = select(_cfg(data_dir, tiny_model_dir, data_root, "select.targets=[code,math]"))
    assert general.name == "nait-code+math-r0.1-s0.jsonl"
    draws = [read_jsonl(select(_cfg(data_dir, tiny_model_dir, data_root, "selector=random",
                                    f"seed={s}"))) for s in (0, 1, 0)]
    assert draws[0] == draws[2] and draws[0] != draws[1]


def test_indomain_resample_selects_from_the_seeded_bootstrap_draw(data_dir, tiny_model_dir,
                                                                   data_root):
    whole = select(_cfg(data_dir, tiny_model_dir, data_root, "select.name=whole"))
    draws = {s: select(_cfg(data_dir, tiny_model_dir, data_root, "select.indomain_resample=true",
                            f"seed={s}", f"select.name=draw{s}")) for s in (1, 2)}
    again = select(_cfg(data_dir, tiny_model_dir, data_root, "select.indomain_resample=true",
                        "seed=1", "select.name=again"))
    scores = {k: [r["score"] for r in read_jsonl(p.with_suffix(".scores.jsonl"))]
              for k, p in {"whole": whole, **draws, "again": again}.items()}
    assert scores[1] == scores["again"]                      # the seed picks the draw
    assert scores[1] != scores[2] and scores[1] != scores["whole"]
    manifest = json.loads(draws[2].with_suffix(".manifest.json").read_text())
    assert manifest["indomain_draw"] == 2 and manifest["seed"] == 2
    assert json.loads(whole.with_suffix(".manifest.json").read_text())["indomain_draw"] is None
    with pytest.raises(ConfigError, match="untargeted"):
        select(_cfg(data_dir, tiny_model_dir, data_root, "selector=random",
                    "select.indomain_resample=true"))


def test_config_errors_fail_fast(data_dir, tiny_model_dir, data_root):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        select(_cfg(data_dir, tiny_model_dir, data_root, "ratio=0"))
    with pytest.raises(ConfigError, match="outside the model"):
        select(_cfg(data_dir, tiny_model_dir, data_root, "selector.layers=[12]"))
    with pytest.raises(MissingConfigException, match="selector/nope"):
        compose(["selector=nope"])
    with pytest.raises(ConfigError, match="not prepared"):
        select(_cfg(data_dir, tiny_model_dir, data_root, "select.targets=[knowledge]"))


def _cli(args, tmp_path, extra_path=""):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in [extra_path, str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
        if p)}
    return subprocess.run([sys.executable, "-m", "naitbench.select", *args, "tracking=disabled",
                           f"hydra.run.dir={tmp_path / 'run'}",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, env=env, cwd=REPO)


def test_a_new_selector_is_one_module_and_one_config(data_dir, tiny_model_dir, data_root,
                                                     tmp_path):
    module_dir, conf_dir = tmp_path / "mods", tmp_path / "conf"
    (conf_dir / "selector").mkdir(parents=True)
    module_dir.mkdir()
    (module_dir / "toy_selector.py").write_text(textwrap.dedent("""
        import numpy as np
        from naitbench.select.protocol import Selector

        class LongestResponse(Selector):
            def score(self, ctx):
                return np.array([len(r["response"]) for r in ctx.pool], dtype=float)
    """))
    (conf_dir / "selector" / "toy.yaml").write_text(
        "_target_: toy_selector.LongestResponse\nname: toy\n")
    result = _cli(["--config-dir", str(conf_dir), "selector=toy", "ratio=0.2",
                   *smoke_overrides(data_dir, tiny_model_dir, data_root)], tmp_path,
                  str(module_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    kept = read_jsonl(data_dir / "subsets" / "toy-r0.2-s0.jsonl")
    pool = read_jsonl(data_dir / "pool" / "pool.jsonl")
    longest = sorted(pool, key=lambda r: (-len(r["response"]), r["id"]))[:10]
    assert [r["id"] for r in kept] == [r["id"] for r in longest]


def test_hydra_multirun_sweeps_layers_and_ratios_on_stored_features(data_dir, tiny_model_dir,
                                                                     data_root, tmp_path):
    select(_cfg(data_dir, tiny_model_dir, data_root))      # extraction happens here
    index = next((data_dir / "features").glob("pool-*")) / "index.json"
    stamp = index.stat().st_mtime_ns
    result = _cli(["-m", "selector.layers=[1],[2,3]", "ratio=0.1,0.2", "select.name=null",
                   *smoke_overrides(data_dir, tiny_model_dir, data_root)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "features pool.jsonl" not in result.stderr          # no extraction progress bar
    assert index.stat().st_mtime_ns == stamp
    swept = sorted(p.name for p in (data_dir / "subsets").glob("nait-code-r0.*-s0-*.jsonl")
                   if not p.name.endswith(".scores.jsonl"))
    assert len(swept) == 4 and len({n.rsplit("-", 1)[1] for n in swept}) == 2   # 2 layer sets


def test_hydra_multirun_sweeps_rules_into_named_arms(data_dir, tiny_model_dir, data_root,
                                                    tmp_path):
    select(_cfg(data_dir, tiny_model_dir, data_root))      # extraction happens here
    result = _cli(["-m", "selector=rds", "selector.rule=round_robin,uot,knn_kde",
                   "select.name=null", *smoke_overrides(data_dir, tiny_model_dir, data_root)],
                  tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for arm in ("rds", "rds+uot", "rds+knn_kde"):   # round_robin is RDS+'s own rule
        manifest = json.loads((data_dir / "subsets" / f"{arm}-code-r0.1-s0.manifest.json")
                              .read_text())
        assert manifest["method"] == arm and manifest["n_selected"] == 5


def test_overlap_and_category_analyses(tmp_path):
    from naitbench.data.categories import categorise
    from naitbench.select.analysis import category_scores, main, overlap

    result = overlap({"a": {"1", "2", "3"}, "b": {"2", "3", "4"}, "c": {"3", "5"}})
    assert result["jaccard"]["a vs b"] == pytest.approx(0.5) and result["core"] == ["3"]
    assert categorise("Write a Python function to sort a list.") == "code"
    assert categorise("Calculate 15 * 4.") == "math"
    assert categorise("Write a poem about autumn.") == "writing"
    assert categorise("Who wrote Hamlet?") == "qa"
    pool = [{"id": "a", "instruction": "Write a Python loop."},
            {"id": "b", "instruction": "Write a poem."}, {"id": "c", "instruction": "Hi"}]
    shares = category_scores([{"id": "a", "score": 3.0}, {"id": "b", "score": 1.0},
                              {"id": "c", "score": 2.0}], pool, top_ratio=0.34)
    assert shares["code"]["top_share"] == 1.0 and shares["writing"]["top_share"] == 0.0
    for name, ids in (("a", ["1", "2"]), ("b", ["2", "3"])):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"id": i} for i in ids])
    main(["overlap", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
          "--out", str(tmp_path / "o.json")])
    assert json.loads((tmp_path / "o.json").read_text())["core"] == ["2"]


def test_rds_shares_nait_extraction_and_ranks_planted_candidates(data_dir, tiny_model_dir,
                                                                 data_root):
    _plant_code_copies(data_dir, 4)
    nait = select(_cfg(data_dir, tiny_model_dir, data_root))
    forward = FORWARD_PASSES["batches"]
    subsets = [select(_cfg(data_dir, tiny_model_dir, data_root, "selector=rds",
                           f"selector.rule={how}", f"select.name=rds-{how}"))
               for how in ("max", "round_robin")]
    assert FORWARD_PASSES["batches"] == forward       # one extraction served NAIT and RDS+
    manifest = json.loads((nait.parent / "rds-max.manifest.json").read_text())
    assert manifest["cost"]["shared"]                  # the shared pass is named, not re-run
    for subset in subsets:
        kept = [r["id"] for r in read_jsonl(subset)]
        assert len(kept) == 5 and len(set(kept)) == 5
    for subset in subsets:   # both aggregations put the planted copies first
        assert {r["id"] for r in read_jsonl(subset)[:4]} == {f"planted{i}" for i in range(4)}


def test_ablation_runs_from_stored_features_with_single_changes(data_dir, tiny_model_dir,
                                                                data_root, tmp_path):
    from naitbench.select.analysis import ablation_rows, main

    cfg = _cfg(data_dir, tiny_model_dir, data_root)
    labels = [label for label, _ in ablation_rows(cfg.selectors.nait, cfg.selectors.nait_variant,
                                                  [["k", "rest"]])]
    assert labels[0] == "nait" and labels[-1] == "nait_variant" and "site: mlp" in labels
    assert "k: 4 + rest: absolute" in labels and not any(x.startswith("name") for x in labels)
    with pytest.raises(ValueError, match="do not differ"):
        ablation_rows(cfg.selectors.nait, cfg.selectors.nait_variant, [["ratio"]])
    select(cfg)                                            # extraction happens here
    forward = FORWARD_PASSES["batches"]
    main(["ablation", *smoke_overrides(data_dir, tiny_model_dir, data_root), "--draws", "3",
          "--out", str(tmp_path / "ablation.json")])
    assert FORWARD_PASSES["batches"] == forward            # every row read the stored features
    result = json.loads((tmp_path / "ablation.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert rows["nait"]["jaccard_to_base"] == 1.0 and result["category"] == "code"
    # at k = 1 the scoring of directions 2..k cannot matter: the same subset
    assert rows["rest: absolute"]["jaccard_to_base"] == 1.0
    assert rows["rest: absolute"]["stability"] == {
        **rows["nait"]["stability"], "wall_s": rows["rest: absolute"]["stability"]["wall_s"]}
    assert all(0 <= r["category_share"] <= 1 and r["stability"]["draws"] == 3
               for r in result["rows"])
    assert not (data_dir / "libraries" / "None").exists()  # the ablation writes no library


def test_grid_crosses_representations_and_rules_from_stored_features(data_dir, tiny_model_dir,
                                                                     data_root, tmp_path):
    from naitbench.select.analysis import main

    _plant_code_copies(data_dir, 4)
    select(_cfg(data_dir, tiny_model_dir, data_root))      # extraction happens here
    forward = FORWARD_PASSES["batches"]
    main(["grid", *smoke_overrides(data_dir, tiny_model_dir, data_root), "--draws", "2",
          "--representations", "nait,rds,bm25", "--rules", "own,max,round_robin,knn_kde",
          "--ratio", "0.2", "--out", str(tmp_path / "grid.json")])
    assert FORWARD_PASSES["batches"] == forward            # every cell read the stored features
    result = json.loads((tmp_path / "grid.json").read_text())
    rows = {r["cell"]: r for r in result["rows"]}
    # rds's own rule is round_robin (one row for both); bm25 has no density rule
    assert list(rows) == ["nait + own", "nait + max", "nait + round_robin", "nait + knn_kde",
                          "rds + round_robin", "rds + max", "rds + knn_kde", "bm25 + max",
                          "bm25 + round_robin", "dsir", "random"]
    planted = {f"planted{i}" for i in range(4)}
    for cell in ("rds + max", "rds + round_robin", "bm25 + max"):   # exact copies: found
        assert planted <= set(rows[cell]["ids"]), cell
    assert all(r["size"] == rows["random"]["size"] and r["jaccard"][r["cell"]] == 1.0
               for r in result["rows"])
    assert rows["random"]["stability"] is None and rows["dsir"]["stability"]["draws"] == 2
    assert "| 1 | nait + own |" in (tmp_path / "grid.md").read_text()
