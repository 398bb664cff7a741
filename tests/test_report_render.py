"""Comparison rows and rendering from hand-made results (the report reads files only)."""

from __future__ import annotations

import pytest

from naitbench.report.compare import comparison_rows
from naitbench.report.figures import task_figure
from naitbench.report.render import html_page, markdown
from naitbench.report.results import RunResult, TaskScore


def _run(method, value, *, target=None, ratio=0.1, sel=None, train=0, shift=0.0):
    items = {f"q{i}": value + shift * (i % 2) for i in range(6)}
    return RunResult(method=method, target=target, ratio=ratio, selection_seed=sel,
                     train_seed=train, name=f"{method}-{target}-{sel}-{train}",
                     scores={"code_bpb": TaskScore("bits_per_byte", False, value, items)})


@pytest.fixture
def runs():
    return [_run("base", 0.723, ratio=None), _run("full", 0.650, ratio=None),
            _run("random", 0.671, sel=0), _run("random", 0.687, sel=1),
            _run("random", 0.669, sel=2), _run("nait", 0.639, target="code")]


def test_rows_compare_each_arm_with_random_and_full(runs):
    rows = {r.method: r for r in comparison_rows(runs, n_boot=300)}
    nait = rows["nait"]
    assert nait.mean == pytest.approx(0.639) and nait.n == 1
    assert nait.vs_random.difference == pytest.approx(0.639 - (0.671 + 0.687 + 0.669) / 3)
    assert nait.vs_random.rank == 1 and not nait.vs_random.inside_noise
    assert nait.vs_full.difference == pytest.approx(-0.011)
    assert rows["random"].n == 3 and rows["random"].vs_random is None
    assert rows["random"].sd == pytest.approx(0.0098658, abs=1e-6)
    assert rows["base"].vs_random is None   # no random arm at the base's (absent) ratio


def test_markdown_and_html_carry_the_numbers(runs, tmp_path):
    rows = comparison_rows(runs, n_boot=300)
    figure = task_figure(rows, "code_bpb", tmp_path / "figures" / "code_bpb.png")
    costs = [{"method": "nait", "target": "code", "wall_s": 12.5, "forward_tokens": 1000,
              "backward_tokens": 0, "note": "shares the extraction pass"}]
    text = markdown("Report", {"profile": "smoke"}, rows, {"code_bpb": figure}, costs,
                    {"Notes": ["full-pool row trained for 1 epoch"]}, tmp_path)
    assert "| nait/code/0.1 | 1 | 0.6390 |" in text
    assert "rank 1 of 4" in text and "figures/code_bpb.png" in text
    assert "| nait | code | 12.5 | 1,000 | 0 | shares the extraction pass |" in text
    page = html_page("Report", text, {"code_bpb": figure}, tmp_path)
    assert page.count("data:image/png;base64,") == 1 and "<td>nait/code/0.1</td>" in page
