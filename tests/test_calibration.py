"""Calibration of the report's verdicts by simulation, with the report's own functions.

Null runs: the method's subsets are drawn like random subsets. Every model's score on an item
is the item's difficulty + its subset's draw + its training seed's deviation + item noise, at
the magnitudes of the embedded runs (docs/report.md): a random subset with one training seed
spreads by about 0.014 bits per byte, training seeds by as much as subset draws, items by
0.08 in difficulty and 0.02 in noise over 100 items. A verdict of "better" or "worse" in a
null run is a false one; its rate must stay at 5% plus three Monte-Carlo standard errors.
The power check: a true effect of 3 random-subset SDs with the default's seed counts is called
at the rate the detectable difference's own power function promises, within three
Monte-Carlo standard errors.

`python tests/test_calibration.py` prints the table of docs/report.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from naitbench.report.stats import (
    ALPHA,
    compare,
    design_noise,
    detectable_difference,
    difference_noise,
    interval,
    power_at,
)

SD_BETWEEN, SD_SEED = 0.01, 0.01          # subset draw, training seed
N_ITEMS, SD_DIFFICULTY, SD_ITEM = 100, 0.08, 0.02
RUNS = 4000                               # simulated runs per design: MC se 0.34 points at 5%
SD_WITHIN = math.sqrt(SD_SEED**2 + SD_ITEM**2 / N_ITEMS)   # a model's mean around its subset's
SD_RANDOM = math.sqrt(SD_BETWEEN**2 + SD_WITHIN**2)        # one random subset, one seed


@dataclass(frozen=True)
class Design:
    """Seed counts of one comparison: the method's subsets x training seeds against the
    random subsets x theirs; `where` says which profile uses it."""

    method_subsets: int
    method_seeds: int
    random_subsets: int
    random_seeds: int
    where: str = ""


#: the seed designs of the committed profiles (and of selection seeds), by seed counts
USED_BY = {(1, 1, 3, 1): "smoke; embedded: full data", (2, 1, 3, 1): "embedded: NAIT, RDS+",
           (2, 1, 6, 1): "embedded-all: NAIT, RDS+",
           (1, 1, 6, 1): "embedded-all: full data, every other method",
           (1, 2, 5, 1): "medium: NAIT, RDS+", (1, 1, 5, 1): "medium: kNN, length, full data",
           (1, 2, 5, 2): "embedded-full, embedded-base, paper",
           (2, 1, 5, 1): "selection seeds", (3, 1, 5, 1): "selection seeds",
           (2, 2, 5, 1): "selection seeds", (2, 1, 5, 2): "selection seeds"}
_GRID = [(1, seeds, n, 1) for seeds in (1, 2, 3) for n in (3, 5, 8)]
DESIGNS = [Design(*shape, USED_BY.get(shape, ""))
           for shape in dict.fromkeys([*_GRID, *USED_BY])]
DEFAULT = Design(2, 1, 3, 1)   # the embedded default's NAIT and RDS+ against its random subsets


def simulate(design: Design, effect: float, rng: np.random.Generator,
             runs: int = RUNS) -> tuple[np.ndarray, np.ndarray]:
    """Item-level scores of `runs` simulated comparisons: (method, random), each
    [runs, subsets, seeds, items]; the method is shifted by `effect`."""
    difficulty = rng.normal(0.7, SD_DIFFICULTY, (runs, 1, 1, N_ITEMS))

    def arm(subsets: int, seeds: int, shift: float) -> np.ndarray:
        draw = rng.normal(0, SD_BETWEEN, (runs, subsets, 1, 1))
        seed = rng.normal(0, SD_SEED, (runs, subsets, seeds, 1))
        noise = rng.normal(0, SD_ITEM, (runs, subsets, seeds, N_ITEMS))
        return difficulty + shift + draw + seed + noise

    return (arm(design.method_subsets, design.method_seeds, effect),
            arm(design.random_subsets, design.random_seeds, 0.0))


def call_rates(design: Design, effect: float, seed: int) -> tuple[float, float]:
    """(rate of any better/worse call, rate of a correct 'better' call): higher is better."""
    method, random = simulate(design, effect, np.random.default_rng(seed))
    diff, se, df = difference_noise(method.mean(axis=-1), random.mean(axis=-1))
    low, high = interval(diff, se, df, 1 - ALPHA)
    return float(np.mean((low > 0) | (high < 0))), float(np.mean(low > 0))


@functools.cache
def table() -> list[dict]:
    """False call rate per design, and the power check at the default design."""
    rows = []
    for k, design in enumerate(DESIGNS):
        false, _ = call_rates(design, 0.0, seed=k)
        se, df = design_noise(SD_BETWEEN, SD_WITHIN, method_subsets=design.method_subsets,
                              method_seeds=design.method_seeds,
                              reference_subsets=design.random_subsets,
                              reference_seeds=design.random_seeds)
        rows.append({"design": design, "false": false,
                     "detectable_sd": float(detectable_difference(se, df)) / SD_RANDOM})
    return rows


def mc_margin(rate: float, runs: int = RUNS) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


@pytest.mark.parametrize("index", range(len(DESIGNS)),
                         ids=[f"{d.method_subsets}x{d.method_seeds}-vs-{d.random_subsets}x"
                              f"{d.random_seeds}" for d in DESIGNS])
def test_null_runs_are_called_better_or_worse_at_most_5_percent(index):
    rate = table()[index]["false"]
    assert rate <= ALPHA + mc_margin(ALPHA), (DESIGNS[index], rate)


def power_check(seed: int = 99) -> tuple[float, float]:
    """(observed rate of 'better', promised rate) for 3 random-subset SDs at the default."""
    effect = 3 * SD_RANDOM
    _, observed = call_rates(DEFAULT, effect, seed=seed)
    se, df = design_noise(SD_BETWEEN, SD_WITHIN, method_subsets=DEFAULT.method_subsets,
                          method_seeds=DEFAULT.method_seeds,
                          reference_subsets=DEFAULT.random_subsets,
                          reference_seeds=DEFAULT.random_seeds)
    return observed, float(power_at(effect, se, df))


def test_power_at_3_random_subset_sds_is_what_the_detectable_difference_promises():
    observed, promised = power_check()
    assert abs(observed - promised) <= mc_margin(promised), (observed, promised)


def test_the_report_path_gives_the_vectorised_verdicts():
    # the dict-of-items path the report takes agrees with the batched one, run by run
    method, random = simulate(DEFAULT, 0.02, np.random.default_rng(5), runs=30)
    diff, se, df = difference_noise(method.mean(axis=-1), random.mean(axis=-1))
    for k in range(30):
        as_items = [[dict(enumerate(seed)) for seed in subset] for subset in method[k]]
        reference = [[dict(enumerate(seed)) for seed in subset] for subset in random[k]]
        c = compare(as_items, reference, higher_is_better=True)
        assert (c.difference, c.se, c.df) == (pytest.approx(float(diff[k])),
                                              pytest.approx(float(se[k])),
                                              pytest.approx(float(df[k])))


def ignoring_the_draw_rate(seed: int = 7) -> float:
    """False call rate at the default design of an interval with the random arm's
    uncertainty only, as if the selected subset had no draw of its own (the flaw of
    resampling the method's own replicates)."""
    method, random = simulate(DEFAULT, 0.0, np.random.default_rng(seed))
    diff, se, df = difference_noise(method.mean(axis=-1), random.mean(axis=-1))
    own, theirs = 1 / DEFAULT.method_subsets, 1 / DEFAULT.random_subsets
    low, high = interval(diff, se * math.sqrt(theirs / (own + theirs)), df, 1 - ALPHA)
    return float(np.mean((low > 0) | (high < 0)))


def test_the_check_fails_an_interval_that_ignores_the_method_subset_draw():
    assert ignoring_the_draw_rate() > ALPHA + mc_margin(ALPHA)


#: method designs against 5 random subsets x 1 seed, by training runs they cost
BUDGET_DESIGNS = [Design(1, 1, 5, 1), Design(1, 2, 5, 1), Design(2, 1, 5, 1),
                  Design(1, 3, 5, 1), Design(3, 1, 5, 1), Design(2, 2, 5, 1), Design(4, 1, 5, 1)]


@functools.cache
def budget_table() -> list[dict]:
    """Per method design: the detectable difference the report states (formula) and the
    simulated rate of 'better' at a true effect of 3 random-subset SDs."""
    rows = []
    for k, design in enumerate(BUDGET_DESIGNS):
        se, df = design_noise(SD_BETWEEN, SD_WITHIN, method_subsets=design.method_subsets,
                              method_seeds=design.method_seeds,
                              reference_subsets=design.random_subsets,
                              reference_seeds=design.random_seeds)
        _, power = call_rates(design, 3 * SD_RANDOM, seed=100 + k)
        rows.append({"design": design, "runs": design.method_subsets * design.method_seeds,
                     "detectable": float(detectable_difference(se, df)), "power": power})
    return rows


def test_selection_seeds_buy_more_than_training_seeds_per_training_run():
    rows = {(r["design"].method_subsets, r["design"].method_seeds): r for r in budget_table()}
    for subsets_first, seeds_first in (((2, 1), (1, 2)), ((3, 1), (1, 3)), ((4, 1), (2, 2))):
        a, b = rows[subsets_first], rows[seeds_first]
        assert a["runs"] == b["runs"] and a["detectable"] < b["detectable"]
        assert a["power"] > b["power"] + mc_margin(0.5)


def markdown() -> str:
    """The calibration table of docs/report.md, from this module's own simulation."""
    lines = ["| method subsets x training seeds | random subsets x training seeds | used by | "
             "false better/worse rate | smallest detectable difference (random-subset SDs) |",
             "|---|---|---|---|---|"]
    for row in table():
        d = row["design"]
        lines.append(f"| {d.method_subsets} x {d.method_seeds} | {d.random_subsets} x "
                     f"{d.random_seeds} | {d.where or '-'} | {100 * row['false']:.1f}% | "
                     f"{row['detectable_sd']:.2f} |")
    observed, promised = power_check()
    default = (f"{DEFAULT.method_subsets} x {DEFAULT.method_seeds} against "
               f"{DEFAULT.random_subsets} x {DEFAULT.random_seeds}")
    lines += ["", f"Power check, {default}, true effect 3 random-subset SDs: called "
              f"better in {100 * observed:.1f}% of runs, promised {100 * promised:.1f}%; "
              f"{RUNS} runs per row (Monte-Carlo margin, three standard errors, at 5%: "
              f"{100 * mc_margin(ALPHA):.1f} points). An interval that ignores the method's "
              f"own subset draw calls {100 * ignoring_the_draw_rate():.1f}% of the "
              f"{default} null runs better or worse.", "",
              "| method design (subsets x training seeds) | training runs | smallest detectable "
              "difference (bits per byte) | called better at 3 random-subset SDs (simulated) |",
              "|---|---|---|---|"]
    for row in budget_table():
        d = row["design"]
        lines.append(f"| {d.method_subsets} x {d.method_seeds} | {row['runs']} | "
                     f"{row['detectable']:.4f} | {100 * row['power']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
