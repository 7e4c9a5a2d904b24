"""Training: the RL loop (GRPO, PPO, RLOO), cold-start SFT, distillation, DeepSpeed strategy, checkpoints.

Importing this package is cheap; ``train()`` loads models, DeepSpeed and the sandbox when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from toolrl.config.schema import RootConfig


def train(cfg: "RootConfig", run_dir: "str | Path", *, resume: bool = False, hooks: Any = None) -> "Path":
    """Run training as configured (see toolrl.train.runner); returns the final model directory."""
    from toolrl.train.runner import train as _train

    return _train(cfg, run_dir, resume=resume, hooks=hooks)


__all__ = ["train"]
