"""The sweeper class (Hydra instantiates plugins only from the hydra_plugins package)."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CellSweeper(Sweeper):
    """One job per pending cell, through the configured launcher."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from naitbench.cli import reported_errors
        from naitbench.scale.sweep import run_sweep

        assert self.config is not None and self.launcher is not None
        with reported_errors():   # a user's mistake: its message, status 2, no traceback
            return run_sweep(self.config, arguments, self.launcher.launch)
