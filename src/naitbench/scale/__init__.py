"""The comparison matrix's pending train and evaluate cells through a Hydra launcher
(joblib, submitit local or Slurm), with DVC as the ledger: `python -m naitbench.scale
hydra/launcher=<name> ...` (docs/scale-out.md).

`cells` asks DVC what is pending and commits what finished; `job` is what each launched job
runs; `sweep` launches the cells round by round (hydra_plugins/naitbench_cells is the Hydra
sweeper that calls it).
"""

from naitbench.scale.cells import CELL_STAGES, Cell, Plan, plan
from naitbench.scale.job import CellFailed, run_cell
from naitbench.scale.sweep import CellsFailed, Outcome, run_sweep

__all__ = ["CELL_STAGES", "Cell", "CellFailed", "CellsFailed", "Outcome", "Plan", "plan",
           "run_cell", "run_sweep"]
