"""How the pending cells are grouped into rounds (naitbench.scale.cells.Plan.rounds): every
cell once, after the cells it reads; with `chunk`, few trained-but-unscored cells at any round
boundary and the heaviest cell balanced by lighter ones."""

from __future__ import annotations

import pytest

from naitbench.scale.cells import Cell, Plan


def _matrix(weights: dict[str, float]) -> Plan:
    """One train cell per subset (its weight: records it trains) and the evaluate cell that
    reads it, in dvc.yaml order (every train stage first), plus the base model's scoring."""
    trains = [Cell(f"train@{name}", "true", ".", (), (), weight) for name, weight in
              weights.items()]
    evals = [Cell(f"evaluate@{name}", "true", ".", (), (f"train@{name}",))
             for name in weights]
    return Plan([*trains, Cell("evaluate_base", "true", ".", ()), *evals])


def _check_order(plan: Plan, rounds: list[list[Cell]]) -> None:
    placed = {c.name: number for number, batch in enumerate(rounds) for c in batch}
    assert sorted(placed) == sorted(c.name for c in plan.cells)
    assert sum(len(batch) for batch in rounds) == len(plan.cells)
    for cell in plan.cells:
        assert all(placed[a] < placed[cell.name] for a in cell.after), cell.name


def _in_flight(rounds: list[list[Cell]]) -> list[int]:
    """Trained but not yet scored cells after each round."""
    trained, scored, out = set(), set(), []
    for batch in rounds:
        trained |= {c.name.split("@", 1)[1] for c in batch if c.name.startswith("train@")}
        scored |= {c.name.split("@", 1)[1] for c in batch if c.name.startswith("evaluate@")}
        out.append(len(trained - scored))
    return out


def test_without_chunk_every_train_cell_comes_first():
    plan = _matrix({f"s{i}": 99.0 for i in range(6)})
    rounds = plan.rounds()
    _check_order(plan, rounds)
    assert len(rounds) == 2
    assert {c.name for c in rounds[0]} == {f"train@s{i}" for i in range(6)} | {"evaluate_base"}


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_rounds_keep_few_cells_in_flight(chunk):
    plan = _matrix({f"s{i}": 99.0 for i in range(12)})
    rounds = plan.rounds(chunk)
    _check_order(plan, rounds)
    assert max(_in_flight(rounds)) <= chunk + 1   # evaluate_base rides with the first trains
    assert _in_flight(rounds)[-1] == 0
    unchunked = max(_in_flight(plan.rounds()))
    assert unchunked == 12 and max(_in_flight(rounds)) < unchunked


def test_a_heavy_cell_is_balanced_by_light_ones():
    """The full-data cell (985 records) beside 99-record subsets, two cells at once: its round
    carries at least its weight in other cells, so the second worker is not left idle."""
    weights = {"full": 985.0, **{f"s{i}": 99.0 for i in range(20)}}
    plan = _matrix(weights)
    rounds = plan.rounds(2)
    _check_order(plan, rounds)
    first = rounds[0]
    assert "train@full" in {c.name for c in first}
    typical = 99.0   # the median weight, which evaluate_base (weight unknown) counts as
    others = sum(weights.get(c.name.split("@", 1)[-1], typical) for c in first
                 if c.name != "train@full")
    assert others >= weights["full"]
    assert max(_in_flight(rounds)) <= len(first)


def test_cells_of_unknown_weight_count_as_a_typical_one():
    plan = _matrix({"a": None, "b": 10.0, "c": 10.0, "d": None})
    rounds = plan.rounds(2)
    _check_order(plan, rounds)
    assert [len([c for c in batch if not c.after]) for batch in rounds][:2] \
        == [2, 2]


def test_chunk_must_be_positive():
    with pytest.raises(ValueError, match=r"scale\.chunk=0"):
        _matrix({"a": 1.0}).rounds(0)
