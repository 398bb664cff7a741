"""The session fixtures build what later tests rely on."""

import json


def test_prepared_smoke_has_pool_and_targets(prepared_smoke, smoke_cfg):
    pool = [json.loads(x) for x in (prepared_smoke / "pool" / "pool.jsonl").open()]
    assert len(pool) == smoke_cfg.pool.size
    for name in smoke_cfg.data.prepared_targets:
        assert (prepared_smoke / "targets" / name / "indomain.jsonl").stat().st_size > 0
        assert (prepared_smoke / "targets" / name / "heldout.jsonl").stat().st_size > 0
