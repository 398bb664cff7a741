"""Hydra plugin module (found by Hydra's and DVC's plugin scan of `hydra_plugins/`): importing
naitbench.config registers the `${nb_subsets:...}` resolver that conf/config.yaml uses, so
`dvc exp run -S ...` composes params.yaml exactly as `python -m naitbench.config dump` does."""

import naitbench.config  # noqa: F401
