"""In-domain bootstrap draws: the unit of a deterministic targeted method's selection seeds."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from naitbench.select.protocol import SelectionContext, indomain_bootstrap


def test_bootstrap_is_seeded_sized_and_varies_with_the_draw():
    a, b = indomain_bootstrap(60, 1, "code"), indomain_bootstrap(60, 1, "code")
    assert np.array_equal(a, b)
    assert a.shape == (60,) and a.min() >= 0 and a.max() < 60
    assert len(np.unique(a)) < 60                       # with replacement
    assert not np.array_equal(a, indomain_bootstrap(60, 2, "code"))
    assert not np.array_equal(a, indomain_bootstrap(60, 1, "math"))
    with pytest.raises(ValueError, match="no in-domain samples"):
        indomain_bootstrap(0, 1, "code")


def test_resampled_context_sees_the_drawn_rows_of_every_target():
    targets = {"code": [{"id": f"c{i}"} for i in range(10)],
               "math": [{"id": f"m{i}"} for i in range(7)]}
    ctx = SelectionContext(cfg=OmegaConf.create({}), pool=[], targets=targets,
                           data_dir=Path("."), model_dir=Path("."), seed=0)
    draw = ctx.resampled(3)
    for name, records in targets.items():
        rows = indomain_bootstrap(len(records), 3, name)
        assert [r["id"] for r in draw.targets[name]] == [records[i]["id"] for i in rows]
        assert np.array_equal(draw.indomain_rows[name], rows)
    assert ctx.targets is targets and ctx.indomain_rows is None   # the original is untouched
