"""Progress events from the rollout scheduler, and a meter that turns them into rates and a work fraction.

The scheduler reports three events, from its own thread, for every engine:
- ``on_tokens(n)``: the engine decoded ``n`` more tokens (any trajectories, finished or not);
- ``on_call()``: a sandbox call came back (its observation is about to be appended);
- ``on_trajectory(traj)``: a trajectory is done (scored by the caller's handler if it wants).

A plain ``Callable[[Trajectory], None]`` is accepted wherever events are, and sees finished trajectories only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from toolrl.types import Trajectory

ProgressFn = Callable[["Trajectory"], None]  # called once per finished trajectory


@runtime_checkable
class RolloutEvents(Protocol):
    def on_tokens(self, n: int) -> None: ...

    def on_call(self) -> None: ...

    def on_trajectory(self, traj: "Trajectory") -> None: ...


class _TrajectoryOnly:
    """Events for a caller that only wants finished trajectories."""

    def __init__(self, fn: ProgressFn | None) -> None:
        self.fn = fn

    def on_tokens(self, n: int) -> None:
        pass

    def on_call(self) -> None:
        pass

    def on_trajectory(self, traj: "Trajectory") -> None:
        if self.fn is not None:
            self.fn(traj)


def as_events(progress: "RolloutEvents | ProgressFn | None") -> RolloutEvents:
    if isinstance(progress, RolloutEvents):
        return progress
    return _TrajectoryOnly(progress)


class _Before:
    def __init__(self, events: RolloutEvents, fn: ProgressFn) -> None:
        self.events, self.fn = events, fn

    def on_tokens(self, n: int) -> None:
        self.events.on_tokens(n)

    def on_call(self) -> None:
        self.events.on_call()

    def on_trajectory(self, traj: "Trajectory") -> None:
        self.fn(traj)
        self.events.on_trajectory(traj)


def before_trajectory(progress: "RolloutEvents | ProgressFn | None", fn: ProgressFn) -> RolloutEvents:
    """``progress``'s events, with ``fn`` run on each finished trajectory first (e.g. scoring it)."""
    return _Before(as_events(progress), fn)


@dataclass
class RolloutMeter:
    """Counts events of one batch of ``trajectories`` with ``budget`` response tokens each.

    Work is measured in response-token budget: a trajectory that is done counts its whole budget, one that runs
    counts the tokens it has so far. The fraction therefore moves with every token and reaches 1 exactly when the
    last trajectory ends, so a time-remaining estimate exists as soon as tokens flow (it errs long, never short
    by more than the unused budget).

    >>> m = RolloutMeter(trajectories=2, budget=100, clock=iter([0.0, 10.0]).__next__)
    >>> m.on_tokens(50); m.work, m.fraction
    (50, 0.25)
    >>> m.finish_one(50); m.work, m.done
    (100, 1)
    >>> round(m.tokens_per_s(), 1)
    5.0
    """

    trajectories: int
    budget: int
    clock: Callable[[], float] = time.perf_counter
    tokens: int = 0
    calls: int = 0
    done: int = 0
    _credit: int = 0  # unused budget of finished trajectories
    _start: float = field(default=-1.0)

    def __post_init__(self) -> None:
        self._start = self.clock()

    @property
    def total(self) -> int:
        return max(1, self.trajectories * self.budget)

    @property
    def work(self) -> int:
        if self.done >= self.trajectories:
            return self.total
        return min(self.total, self.tokens + self._credit)

    @property
    def fraction(self) -> float:
        return self.work / self.total

    def on_tokens(self, n: int) -> None:
        self.tokens += n

    def on_call(self) -> None:
        self.calls += 1

    def finish_one(self, model_tokens: int) -> None:
        self.done += 1
        self._credit += max(0, self.budget - model_tokens)

    def elapsed(self) -> float:
        return max(1e-9, self.clock() - self._start)

    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed()

    def calls_per_s(self) -> float:
        return self.calls / self.elapsed()


__all__ = ["ProgressFn", "RolloutEvents", "RolloutMeter", "as_events", "before_trajectory"]
