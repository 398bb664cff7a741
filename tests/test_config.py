"""Config composition of every profile, params.yaml in sync with conf/, fail-fast errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from naitbench.config import (
    PROFILES,
    REPO_DIR,
    ConfigError,
    check_layers,
    check_ratio,
    compose,
    dump_params,
    trained_pairs,
    validate,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes_and_validates(profile):
    cfg = validate(compose([f"profile={profile}"]))
    assert cfg.profile_name == profile
    for name in cfg.data.prepared_targets:
        assert cfg.targets[name].name == name


def test_profiles_choose_their_models_and_sizes():
    assert compose(["profile=smoke"]).model.kind == "tiny"
    assert compose(["profile=smoke"]).pool.size == 50
    assert compose(["profile=embedded-base"]).model.name == "gemma3-270m"
    paper = compose(["profile=paper"])
    assert paper.pool.source == "hub" and paper.targets.multilingual.source == "hub"
    assert set(paper.data.prepared_targets) == {"math", "reasoning", "knowledge", "code",
                                                "multilingual"}


def test_params_yaml_is_the_composed_default_config(tmp_path):
    dump_params(tmp_path / "params.yaml")
    assert OmegaConf.load(tmp_path / "params.yaml") == OmegaConf.load(REPO_DIR / "params.yaml"), \
        "params.yaml is stale: run `python -m naitbench.config dump`"


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, "a", True])
def test_ratio_outside_unit_interval_fails_fast(ratio):
    with pytest.raises(ConfigError, match="ratio"):
        check_ratio(ratio)
    if not isinstance(ratio, str):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            validate(compose([f"ratio={ratio}"]))


def test_layers_outside_the_model_fail_fast():
    assert check_layers([0, 29, -1], 30) == [0, 29, 29]
    with pytest.raises(ConfigError, match="layer 30 is outside the model, which has 30 layers"):
        check_layers([3, 30], 30)


def test_unknown_profile_or_target_is_a_readable_error():
    with pytest.raises(MissingConfigException, match="profile/nope"):
        compose(["profile=nope"])
    with pytest.raises(ConfigError, match="not a target"):
        validate(compose(["data.prepared_targets=[code,chemistry]"]))
    with pytest.raises(ConfigError, match="not prepared"):
        validate(compose(["target=knowledge"]))
    with pytest.raises(ConfigError, match="on_bad_record"):
        validate(compose(["data.on_bad_record=ignore"]))


def test_matrix_subsets_follow_the_lists_in_dvc_own_composition(tmp_path):
    # a fresh interpreter outside the repo, as `dvc exp run -S` composes: the resolver comes
    # from the hydra_plugins scan, not from an earlier import
    script = ("from dvc.utils.hydra import compose_and_dump; import sys; "
              "compose_and_dump(sys.argv[1], sys.argv[2], None, 'config', sys.argv[3], "
              "['runs.ratios=[0.05,0.2]', 'runs.targeted=[nait]', 'runs.untargeted=[ifd]', "
              "'runs.random_seeds=[4]'])")
    out = tmp_path / "params.yaml"
    subprocess.run([sys.executable, "-c", script, str(out), str(REPO_DIR / "conf"),
                    str(REPO_DIR)], cwd=tmp_path, check=True)
    runs = OmegaConf.load(out).runs
    # the default profile selects NAIT from two in-domain draws (selection seeds 0, 1)
    nait = [f"nait-code-r{r}-s{k}" for r in ("0.05", "0.2") for k in (0, 1)]
    assert list(runs.subsets) == [*nait, "ifd-r0.05-s0", "ifd-r0.2-s0", "random-r0.05-s4",
                                  "random-r0.2-s4"]
    assert sorted(runs.resampled) == sorted(nait)
    # one training seed for every subset, and no rater model (IFD reads none)
    assert [(v.subset, v.seed) for v in runs.trained.values()] == [
        (name, 0) for name in runs.subsets]
    assert list(runs.trained)[:2] == ["nait-code-r0.05-s0-seed0", "nait-code-r0.05-s1-seed0"]
    assert not runs.raters


def test_matrix_lists_are_checked():
    with pytest.raises(ConfigError, match="should be"):
        validate(compose(["runs.subsets=[nait-code-r0.1-s0]"]))
    with pytest.raises(ConfigError, match="not in the selectors catalogue"):
        validate(compose(["runs.targeted=[nope]"]))
    with pytest.raises(ConfigError, match=r"which is untargeted: move it to runs\.untargeted"):
        validate(compose(["runs.targeted=[length]"]))
    with pytest.raises(ConfigError, match=r"which is targeted: move it to runs\.targeted"):
        validate(compose(["runs.untargeted=[knn]"]))
    with pytest.raises(ConfigError, match="method_seeds names 'nope'"):
        validate(compose(["+runs.method_seeds.nope=[0]"]))
    with pytest.raises(ConfigError, match=r"method_seeds\.nait is empty"):
        validate(compose(["+runs.method_seeds.nait=[]"]))


def test_training_seeds_per_method_fan_out_the_train_stages():
    runs = validate(compose(["profile=smoke", "runs.seeds=[3]",
                             "++runs.method_seeds={rds: [0, 1, 2], nait: [0, 1]}"])).runs
    pairs = trained_pairs(runs)
    assert [s for name, s in pairs if name.startswith("rds-")] == [0, 1, 2]
    assert [s for name, s in pairs if name.startswith("nait-")] == [0, 1]
    assert {s for name, s in pairs if name.split("-")[0] not in ("rds", "nait")} == {3}
    assert len(pairs) == len(runs.subsets) + 3


def test_the_default_replicates_nait_and_rds_over_selection_seeds():
    """The embedded default (#22's sizing): NAIT and RDS+ twice each, from in-domain bootstrap
    draws, one training seed, three random subsets; nothing else selected."""
    runs = validate(compose(["profile=embedded"])).runs
    assert list(runs.subsets) == ["nait-code-r0.1-s0", "nait-code-r0.1-s1", "rds-code-r0.1-s0",
                                  "rds-code-r0.1-s1", *[f"random-r0.1-s{k}" for k in range(3)]]
    assert sorted(runs.resampled) == list(runs.subsets)[:4] and not runs.targeted_once
    assert {s for _, s in trained_pairs(runs)} == {0}


def test_rater_models_are_prepared_only_for_a_selector_that_reads_them():
    """The SelectIT rater's conversion (prepare_raters) runs only when SelectIT is in the
    matrix; a params.yaml whose runs.raters disagrees is refused."""
    assert not validate(compose(["profile=embedded"])).runs.raters
    every = validate(compose(["profile=embedded-all"]))
    assert list(every.runs.raters) == ["second"]
    assert every.runs.raters.second.dir == every.raters.second.dir
    # a matrix without SelectIT, from a selector list that drops it
    assert not validate(compose(["profile=smoke", "runs.untargeted=[length]"])).runs.raters
    stale = compose(["profile=embedded"])
    stale.runs.raters = OmegaConf.to_container(every.runs.raters)
    with pytest.raises(ConfigError, match=r"runs\.raters does not match"):
        validate(stale)


def test_a_second_clone_sharing_the_venv_dumps_and_estimates_its_own_params(tmp_path):
    """The installed package belongs to this checkout; run from another clone, `config dump`
    and the estimate read and write that clone's conf/ and params.yaml, not this one's."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO_DIR / "conf", clone / "conf")
    shutil.copytree(REPO_DIR / "hydra_plugins", clone / "hydra_plugins",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "conf" / "profile" / "smoke.yaml").write_text(
        (REPO_DIR / "conf" / "profile" / "smoke.yaml").read_text().replace(
            "profile_name: smoke", "profile_name: smoke-of-the-clone"))
    ours = (REPO_DIR / "params.yaml").read_bytes()
    subprocess.run([sys.executable, "-m", "naitbench.config", "dump", "profile=smoke"],
                   cwd=clone, check=True, capture_output=True)
    assert (REPO_DIR / "params.yaml").read_bytes() == ours
    assert OmegaConf.load(clone / "params.yaml").profile_name == "smoke-of-the-clone"
    out = subprocess.run([sys.executable, "-m", "naitbench.estimate", "--no-probe"], cwd=clone,
                         check=True, capture_output=True, text=True).stdout
    assert "profile 'smoke-of-the-clone'" in out


def test_selection_seeds_give_a_targeted_method_one_subset_per_bootstrap_draw():
    runs = validate(compose(["profile=smoke", "++runs.selection_seeds={nait: [0, 1, 2]}"])).runs
    nait = [n for n in runs.subsets if n.startswith("nait-")]
    assert nait == ["nait-code-r0.1-s0", "nait-code-r0.1-s1", "nait-code-r0.1-s2"]
    assert OmegaConf.to_container(runs.resampled) == {
        name: {"method": "nait", "target": "code", "ratio": 0.1, "seed": k}
        for k, name in enumerate(nait)}
    # selected once, from every sample
    assert list(runs.targeted_once) == ["nait_variant", "rds", "knn", "less", "bm25", "dsir",
                                        "rds+uot"]
    assert [s for name, s in trained_pairs(runs) if name.startswith("nait-")] == [0, 0, 0]
    # without selection seeds nothing changes: no resampled stage, every method once
    default = validate(compose(["profile=smoke"])).runs
    assert not default.resampled and list(default.targeted_once) == list(default.targeted)
    with pytest.raises(ConfigError, match=r"not in runs\.targeted"):
        validate(compose(["profile=smoke", "++runs.selection_seeds={length: [0, 1]}"]))
    with pytest.raises(ConfigError, match="non-empty list of integer seeds"):
        validate(compose(["profile=smoke", "++runs.selection_seeds={nait: []}"]))


def test_selection_seeds_fan_out_dvc_select_resampled_stages(tmp_path):
    # DVC's own reading of dvc.yaml with params.yaml composed for two NAIT selection seeds
    (tmp_path / "dvc.yaml").write_text((REPO_DIR / "dvc.yaml").read_text())
    dump_params(tmp_path / "params.yaml",
                ["profile=smoke", "++runs.selection_seeds={nait: [0, 1]}"])
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True)
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
                            cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    stages = set(listed.split())
    assert {"select_resampled@nait-code-r0.1-s0", "select_resampled@nait-code-r0.1-s1",
            "train@nait-code-r0.1-s1-seed0"} <= stages
    assert "select@nait-code-0.1" not in stages and "select@rds-code-0.1" in stages
