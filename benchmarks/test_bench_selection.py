"""Selection cost of every selector configured in conf/selector on the same pool slice, cold
(no stored features), relative to NAIT."""

from __future__ import annotations

import time

from conftest import N, make_data_dir
from hydra.utils import instantiate

from naitbench.config import CONF_DIR, compose
from naitbench.io import read_jsonl
from naitbench.select.protocol import SelectionContext

SELECTORS = sorted(p.stem for p in (CONF_DIR / "selector").glob("*.yaml"))


def test_selection_cost_relative_to_nait(benchmark, bench_model, bench_source, bench_target,
                                         data_root, tmp_path):
    data = make_data_dir(bench_source, tmp_path / "data", 2 * N, bench_target, N)
    costs = {}

    def select_all():
        for name in SELECTORS:
            costs[name] = _cold_cost(name, bench_model, data, bench_target, data_root, tmp_path)

    benchmark.pedantic(select_all, rounds=1, iterations=1)
    benchmark.extra_info.update(costs)
    for name, cost in costs.items():
        benchmark.extra_info[f"{name}_over_nait_wall"] = cost["wall_s"] / costs["nait"]["wall_s"]
    assert costs["nait"]["forward_tokens"] > 0


def _cold_cost(name, bench_model, data, bench_target, data_root, tmp_path) -> dict:
    """Wall time and tokens of one selector scoring the pool with an empty feature store."""
    overrides = ["profile=smoke", f"model.dir={bench_model}", f"paths.data_dir={data}",
                 f"paths.data_root={data_root}", f"selector={name}",
                 f"target={bench_target}", f"data.prepared_targets=[{bench_target}]",
                 f"features.root={tmp_path}/features-{name}", "select.name=bench"]
    if name == "selectit":  # two raters of the bench model's size (no rater is prepared here)
        overrides.append(f"selector.models=[null,{bench_model}]")
    cfg = compose(overrides)
    selector = instantiate(cfg.selector)
    ctx = SelectionContext(
        cfg=cfg, pool=read_jsonl(data / "pool" / "pool.jsonl"),
        targets=({bench_target: read_jsonl(data / "targets" / bench_target /
                                           "indomain.jsonl")} if selector.targeted else {}),
        data_dir=data, model_dir=bench_model, seed=0)
    began = time.perf_counter()
    selector.run(ctx)
    shared = ctx.cost["shared"].values()
    return {"wall_s": time.perf_counter() - began,
            "forward_tokens": ctx.cost["forward_tokens"]
            + sum(c["forward_tokens"] for c in shared),
            "backward_tokens": ctx.cost["backward_tokens"]}
