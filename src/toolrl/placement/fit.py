"""The plan's feasibility check at `toolrl train` start, on GPUs only (a CPU run has no fixed memory budget)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig


def check_before_launch(cfg: "RootConfig", world_size: int) -> None:
    """Refuse a layout that cannot start, or (on GPUs) a plan that does not fit (ConfigError naming the setting)."""
    from toolrl.placement.build import check_placement

    check_placement(cfg, world_size)
    if cfg.run.device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        return
    from toolrl.errors import ConfigError
    from toolrl.placement.plan import GIB, preflight

    gpu_mem = torch.cuda.get_device_properties(0).total_memory / GIB
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or torch.cuda.device_count()
    plan = preflight(cfg, world_size, gpu_mem, per_node)
    if plan is not None and not plan.fits:
        p = plan.problems[0]
        raise ConfigError(p.message, f"{p.hint} (see `toolrl plan`)")
