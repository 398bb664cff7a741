"""Hydra sweeper plugin `hydra/sweeper=cells` (conf/hydra/sweeper/cells.yaml): its sweep is
over the comparison matrix's pending DVC cells (naitbench.scale.sweep), launched by whatever
`hydra/launcher` is configured."""
