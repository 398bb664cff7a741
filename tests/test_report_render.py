"""Comparison rows and rendering from hand-made results (the report reads files only)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_data import TASKS, fabricate
from scipy import stats

from naitbench.config import compose
from naitbench.report.__main__ import build_report
from naitbench.report.compare import comparison_rows
from naitbench.report.figures import main_figure
from naitbench.report.names import short_subset_name
from naitbench.report.render import html_page, markdown
from naitbench.report.results import RunResult, TaskScore
from naitbench.report.stats import BETTER, INSIDE_NOISE, WORSE, holm

TASK = "nb_humaneval_bpb"


def _run(method, value, *, target=None, ratio=0.1, sel=None, train=0, shift=0.0):
    items = {f"q{i}": value + shift * (i % 2) for i in range(6)}
    return RunResult(method=method, target=target, ratio=ratio, selection_seed=sel,
                     train_seed=train, name=f"{method}-{target}-{sel}-{train}",
                     scores={TASK: TaskScore("bits_per_byte", False, value, items)})


RANDOM = (0.671, 0.687, 0.669, 0.675, 0.680)


@pytest.fixture
def runs():
    return [_run("base", 0.723, ratio=None), _run("full", 0.650, ratio=None),
            *(_run("random", v, sel=k) for k, v in enumerate(RANDOM)),
            _run("nait", 0.639, target="code")]


def test_rows_compare_each_arm_with_random_and_full(runs):
    rows = {r.method: r for r in comparison_rows(runs)}
    nait = rows["nait"]
    sd = float(np.std(RANDOM, ddof=1))
    assert nait.mean == pytest.approx(0.639) and nait.n == 1
    c = nait.vs_random
    assert c.difference == pytest.approx(0.639 - np.mean(RANDOM))
    # one subset against five: a new random subset's spread, t on 4 df
    assert c.se == pytest.approx(sd * np.sqrt(1 + 1 / 5)) and c.df == pytest.approx(4)
    assert c.high == pytest.approx(c.difference + stats.t.ppf(0.975, 4) * c.se)
    assert c.rank == 1 and c.verdict == BETTER   # lower bpb
    # against full data both sides are one subset: each borrows the random subsets' spread
    assert nait.vs_full.difference == pytest.approx(-0.011)
    assert nait.vs_full.se == pytest.approx(sd * np.sqrt(2))
    assert nait.vs_full.verdict == INSIDE_NOISE
    assert rows["random"].n == 5 and rows["random"].vs_random is None
    assert rows["random"].sd == pytest.approx(sd)
    # one ratio in the run: the base model and full data are set against its random subsets
    assert rows["base"].vs_random.verdict == WORSE and rows["base"].vs_random.rank == 6
    assert rows["full"].vs_random.verdict == BETTER
    # the headline family here is NAIT on one task: Holm over one comparison changes nothing
    assert nait.family_size == 1 and nait.family_p == pytest.approx(c.p_value)
    assert rows["base"].family_p is None


def test_markdown_and_html_carry_the_numbers(runs, tmp_path):
    rows = comparison_rows(runs)
    figure = main_figure(rows, tmp_path / "figures" / "main.png")
    costs = [{"method": "nait", "target": "code", "wall_s": 12.5, "forward_tokens": 1000,
              "backward_tokens": 0, "note": "shares the extraction pass"}]
    text = markdown("Report", {"profile": "smoke"}, rows, figure, costs,
                    {"Notes": ["full-pool row trained for 1 epoch"]}, tmp_path)
    heading = "HumanEval solutions, bits per byte (target)"
    diff = f"{0.639 - np.mean(RANDOM):+.4f} ["
    assert f"## {heading}: `{TASK}`" in text
    nait = "NAIT (published recipe, code)"
    assert f"| {heading} | {nait} | {diff}" in text           # the answer's table
    assert f"| {nait} | 0.6390 | - | {diff}" in text and "| 1 of 6 | better |" in text
    assert "| base model (no tuning) | `base` | 1 | 0.7230 |" in text
    assert "figures/main.png" in text
    assert "| nait | code | 12.5 | 1,000 | 0 | shares the extraction pass |" in text
    page = html_page("Report", text, [figure], tmp_path)
    assert page.count("data:image/png;base64,") == 1 and f"<td>{nait}</td>" in page
    assert f"<code>{TASK}</code>" in page and "<strong>Verdict</strong>" in page


def test_the_answer_says_when_no_headline_method_ran(runs, tmp_path):
    rows = comparison_rows([r for r in runs if r.method != "nait"])
    text = markdown("Report", {}, rows, None, [], {}, tmp_path)
    assert "No NAIT (published recipe) or RDS+ arm in this run" in _first_screen(text)


def _first_screen(text: str) -> str:
    """Everything before the first task's section."""
    return text[:text.index("\n## ", text.index("## Answer") + 1)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A built report over 2 tasks, 5 random subsets, NAIT and RDS+, 2 training seeds."""
    data = tmp_path_factory.mktemp("report") / "data"
    fabricate(data, {"nait-code-r0.1-s0": {"nb_humaneval_bpb": -0.03, "nb_gsm8k_bpb": -0.012},
                     "rds-code-r0.1-s0": {"nb_humaneval_bpb": -0.01, "nb_gsm8k_bpb": -0.01}},
              seeds=[0, 1])
    cfg = compose(["profile=smoke", f"paths.data_dir={data}", "tracking=disabled",
                   "runs.targeted=[nait,rds]", "runs.untargeted=[]",
                   "runs.random_seeds=[0,1,2,3,4]", "runs.seeds=[0,1]", "report.power=0.8"])
    build_report(cfg)
    return data / "report"


def test_report_leads_with_the_answer_for_target_and_transfer(report):
    text = (report / "report.md").read_text()
    rows = json.loads((report / "comparison.json").read_text())["rows"]
    first = _first_screen(text)
    family = [r for r in rows if r["method"] in ("nait", "rds")]
    assert len(family) == 2 * len(TASKS)
    adjusted = holm([r["vs_random"]["p_value"] for r in family])
    assert f"This screen makes {len(family)} comparisons" in first
    for row, p in zip(family, adjusted, strict=True):
        c = row["vs_random"]
        role = "target" if row["task"] == "nb_humaneval_bpb" else "transfer"
        assert row["task_title"].endswith(f"({role})")
        assert row["family_p"] == pytest.approx(p) and row["family_size"] == len(family)
        word = (INSIDE_NOISE if p >= 0.05 else BETTER if c["difference"] < 0 else WORSE)
        assert row["family_verdict"] == word                 # lower bits per byte is better
        line = (f"| {row['task_title']} | {row['arm_name']} | {c['difference']:+.4f} "
                f"[{c['low']:+.4f}, {c['high']:+.4f}] | {p:.3f} | {word} | "
                f"{c['rank']} of {c['n_reference'] + 1} | {c['detectable']:.4f} |")
        assert line in first
        caution = f"{row['arm_name']} {'beats' if word == BETTER else 'is worse than'}"
        if word in (BETTER, WORSE):
            bullet = next(b for b in first.splitlines() if f"`{row['task']}`:" in b)
            said = f"{caution} random subsets by less than this run can reliably detect" in bullet
            assert said == (abs(c["difference"]) < c["detectable"])
    assert first.count("This run could detect differences of about") == len(TASKS)
    assert first.index("(target)") < first.index("(transfer)")
    assert "figures/main.png" in first and text.count("**Verdict**") == 1
    page = (report / "report.html").read_text()
    answer = page[:page.index("<h2>", page.index("<h2>Answer</h2>") + 1)]
    assert "<td>NAIT (published recipe, code)</td>" in answer and "<td>RDS+ (code)</td>" in answer
    assert "data:image/png;base64," in answer


def test_verdicts_follow_the_interval_and_the_metric_direction(report):
    rows = json.loads((report / "comparison.json").read_text())["rows"]
    compared = [r for r in rows if r["vs_random"]]
    assert len(compared) == 2 * len(TASKS) * 2          # nait, rds, full, base on each task
    for row in compared:
        c = row["vs_random"]
        lower_side = c["high"] < 0
        expected = (INSIDE_NOISE if c["low"] <= 0 <= c["high"]
                    else BETTER if lower_side != row["higher_is_better"] else WORSE)
        assert c["verdict"] == expected, row["arm"]


def test_each_task_section_is_table_then_sentences_then_details(report):
    text = (report / "report.md").read_text()
    for task in TASKS:
        section = text[text.index(f"`{task}`\n"):]
        section = section[:section.index("\n## ")]
        table = section.index("| arm | mean | replicate sd |")
        sentences = [m.start() for m in re.finditer(r"^- .+ scores? ", section, re.M)]
        assert len(sentences) == 5                       # NAIT, RDS+, random, full, base
        assert table < min(sentences) and max(sentences) < section.index("### Details")
        assert "| NAIT (published recipe, code) | `nait/code/0.1` | 2 |" in section


def test_the_stability_section_lists_each_resampled_selector(tmp_path):
    stable = {"draws": 20, "ratio": 0.1, "mean_jaccard": 0.8125, "sd_jaccard": 0.05,
              "min_jaccard": 0.7}
    costs = [{"method": "nait_variant", "target": "code", "wall_s": 1.0, "forward_tokens": 0,
              "backward_tokens": 0, "stability": stable},
             {"method": "length", "target": "", "wall_s": 1.0, "forward_tokens": 0,
              "backward_tokens": 0, "stability": None}]
    seed1 = {**costs[0], "wall_s": 2.0}         # a second selection seed: same measurement
    other = {**costs[0], "target": "math", "stability": {**stable, "mean_jaccard": 0.5}}
    text = markdown("Report", {}, [], None, [*costs, seed1, other], {}, tmp_path)
    section = text.split("## Selection stability", 1)[1]
    row = "| NAIT (suite variant) | code | 0.1 | 20 | 0.812 | 0.050 | 0.700 |"
    assert section.count(row) == 1
    assert "| NAIT (suite variant) | math | 0.1 | 20 | 0.500 |" in section
    assert "length" not in section
    assert "## Selection stability" not in markdown("Report", {}, [], None, costs[1:], {},
                                                    tmp_path)


def test_a_subset_drops_its_seed_only_when_it_is_its_methods_only_subset():
    names = ["nait-code-r0.1-s0", "nait-code-r0.1-s1", "rds-code-r0.1-s0", "random-r0.1-s0",
             "random-r0.1-s1", "knn-code-r0.15-s0"]
    short = [short_subset_name(n, names) for n in names]
    assert short == ["nait-code-r0.1-s0", "nait-code-r0.1-s1", "rds-code-r0.1",
                     "random-r0.1-s0", "random-r0.1-s1", "knn-code-r0.15"]


def test_report_headline_puts_other_methods_in_the_family(runs, tmp_path):
    """`report.headline` names the first screen's methods: an untargeted arm joins the Holm
    family (two comparisons: each adjusted p is at least its own), NAIT leaves it."""
    runs = [*runs, _run("length", 0.700)]
    rows = {r.method: r for r in comparison_rows(runs, headline=["nait", "length"])}
    assert rows["nait"].family_size == rows["length"].family_size == 2
    assert rows["length"].family_p >= rows["length"].vs_random.p_value
    text = _first_screen(markdown("Report", {}, list(rows.values()), None, [], {}, tmp_path,
                                  ["length"]))
    assert "| length |" in text and "NAIT (published recipe, code)" not in text


def test_an_unknown_headline_method_is_named():
    from omegaconf import OmegaConf

    from naitbench.config import ConfigError
    from naitbench.report.__main__ import headline_methods

    cfg = OmegaConf.create({"report": {"headline": ["nait", "nate"]},
                            "selectors": {"nait": {}, "rds": {}}})
    with pytest.raises(ConfigError, match=r"report\.headline names \['nate'\]"):
        headline_methods(cfg)
    default = OmegaConf.create({"report": {}, "selectors": {"nait": {}, "rds": {}}})
    assert headline_methods(default) == ["nait", "rds"]
