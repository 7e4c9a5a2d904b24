"""A Rich bar for one batch of rollouts that moves with every decoded token and sandbox call.

The bar's unit is the response-token budget (``toolrl.rollout.progress.RolloutMeter``): it advances as tokens are
decoded and jumps by a trajectory's unused budget when it ends, so Rich's time-remaining estimate exists as soon as
tokens flow. Finished samples, tokens/s and calls/s are shown next to it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from toolrl.rollout.progress import RolloutMeter


def rollout_columns() -> list[Any]:
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[samples]}"), TextColumn("[dim]{task.fields[rates]}[/]"),
            TimeElapsedColumn(), TimeRemainingColumn()]


class RolloutBar:
    """RolloutEvents that drive one task of a Rich ``Progress``; ``describe(traj)`` may return a new description."""

    def __init__(self, progress: Any, task: Any, trajectories: int, budget: int,
                 describe: Callable[[Any], str | None] | None = None) -> None:
        self.progress, self.task, self.describe = progress, task, describe
        self.lock = threading.Lock()
        self.meter = RolloutMeter(trajectories, budget)
        self._draw()

    @classmethod
    def add(cls, progress: Any, description: str, trajectories: int, budget: int,
            describe: Callable[[Any], str | None] | None = None) -> "RolloutBar":
        """A new task on ``progress`` (its text columns need their fields from the start)."""
        task = progress.add_task(description, total=max(1, trajectories * budget), samples="", rates="")
        return cls(progress, task, trajectories, budget, describe)

    def reset(self, trajectories: int, budget: int) -> None:
        with self.lock:
            self.meter = RolloutMeter(trajectories, budget)
        self._draw()

    def on_tokens(self, n: int) -> None:
        with self.lock:
            self.meter.on_tokens(n)
        self._draw()

    def on_call(self) -> None:
        with self.lock:
            self.meter.on_call()
        self._draw()

    def on_trajectory(self, traj: Any) -> None:
        with self.lock:
            self.meter.finish_one(traj.num_model_tokens)
        desc = self.describe(traj) if self.describe is not None else None
        if desc is not None:
            self.progress.update(self.task, description=desc)
        self._draw()

    def _draw(self) -> None:
        # Only sets the task's fields (cheap); Rich's own refresh thread renders them.
        with self.lock:
            m = self.meter
            fields = dict(total=m.total, completed=m.work, samples=f"{m.done}/{m.trajectories} samples",
                          rates=f"{m.tokens_per_s():.1f} tok/s · {m.calls_per_s():.2f} calls/s")
        self.progress.update(self.task, **fields)


__all__ = ["RolloutBar", "rollout_columns"]
