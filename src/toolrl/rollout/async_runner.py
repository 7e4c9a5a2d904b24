"""The multi-turn scheduler, one for every engine: generation never waits for the sandbox.

One thread drives the engine through the step protocol (``toolrl.rollout.engine.Engine``: ``submit`` / ``step`` /
``abort``); code runs on a thread pool the size of the sandbox pool. A trajectory whose code is running leaves
the batch; the moment its observation is back it is resubmitted (with vLLM its prefix is still in the prefix cache)
while the others keep decoding. All decisions live in ``TrajectoryState``, so every engine produces trajectories
with the same structure, masks and call records. Progress events (``toolrl.rollout.progress``) fire as tokens are
decoded, as calls come back and as trajectories end.

Deadlines, so nothing hangs:
- per trajectory: ``rollout.trajectory_timeout_s`` from its start; a trajectory past it is cut wherever it is
  (generating: the request is aborted; executing: its call is abandoned) with ``finish_reason="timeout"``;
- per call: the sandbox enforces ``tool.timeout_s`` itself; a sandbox that has not answered ``call_deadline_s``
  after the call started is treated as broken (an infrastructure failure, dropped from training, not punished).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from toolrl.rollout.agent import TrajectoryState
from toolrl.rollout.engine import Engine, SamplingSpec
from toolrl.rollout.loop import make_states, release_session, safe_run
from toolrl.rollout.progress import RolloutEvents, as_events
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig
    from toolrl.rollout.progress import ProgressFn
    from toolrl.sandbox.base import Sandbox
    from toolrl.types import Problem, Trajectory

Interval = tuple[float, float]
StepEngine = Engine  # the name this scheduler used before every engine shared the protocol


@dataclass
class RolloutStats:
    """Where the wall time of one ``run_rollouts`` call went (perf_counter seconds)."""

    wall_s: float = 0.0
    tokens: int = 0  # model tokens generated (observation tokens excluded)
    gen_intervals: list[Interval] = field(default_factory=list)  # engine steps
    call_intervals: list[Interval] = field(default_factory=list)  # sandbox calls, start to result
    timeouts: int = 0  # trajectories cut by their deadline
    abandoned_calls: int = 0  # calls the sandbox did not answer in time

    @property
    def gen_busy_s(self) -> float:
        return total_length(merge(self.gen_intervals))

    @property
    def sandbox_s(self) -> float:
        return sum(b - a for a, b in self.call_intervals)

    @property
    def sandbox_hidden_share(self) -> float:
        """Share of sandbox call time during which the engine was generating for other trajectories."""
        return hidden_share(self.call_intervals, self.gen_intervals)

    def summary(self) -> dict[str, float]:
        return {
            "wall_s": self.wall_s,
            "tokens": float(self.tokens),
            "tokens_per_s": self.tokens / self.wall_s if self.wall_s > 0 else 0.0,
            "gen_busy_s": self.gen_busy_s,
            "sandbox_s": self.sandbox_s,
            "sandbox_hidden_share": self.sandbox_hidden_share,
            "timeouts": float(self.timeouts),
            "abandoned_calls": float(self.abandoned_calls),
        }


def merge(intervals: Sequence[Interval]) -> list[Interval]:
    """Union of intervals as sorted, disjoint intervals.

    >>> merge([(3, 4), (0, 1), (0.5, 2)])
    [(0, 2), (3, 4)]
    """
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def total_length(intervals: Sequence[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def hidden_share(calls: Sequence[Interval], busy: Sequence[Interval]) -> float:
    """Sum over calls of their overlap with ``busy`` (merged), divided by the calls' total duration.

    >>> hidden_share([(0, 2), (4, 6)], [(1, 5)])
    0.5
    >>> hidden_share([], [(0, 1)])
    0.0
    """
    busy = merge(busy)
    total = sum(b - a for a, b in calls)
    if total <= 0:
        return 0.0
    covered = 0.0
    for a, b in calls:
        for x, y in busy:
            if y <= a:
                continue
            if x >= b:
                break
            covered += min(b, y) - max(a, x)
    return covered / total


def call_deadline_s(cfg: "RootConfig") -> float:
    """How long the scheduler waits for one sandbox call: its own timeout per attempt, plus start-up slack."""
    return cfg.tool.timeout_s * (1 + max(0, cfg.sandbox.retries)) + 10.0


@dataclass
class _Call:
    state: TrajectoryState
    started: float
    interval: list[float]  # [start, end], end filled by the worker thread


def run_rollouts(
    problems: "Sequence[Problem]",
    *,
    engine: Engine,
    sandbox: "Sandbox",
    cfg: "RootConfig",
    sampling: SamplingSpec,
    n: int = 1,
    progress: "RolloutEvents | ProgressFn | None" = None,
    stats: RolloutStats | None = None,
) -> "list[Trajectory]":
    """Generate ``n`` multi-turn tool trajectories per problem with any engine of the step protocol.

    Returns ``len(problems) * n`` trajectories ordered by problem, then sample. ``progress`` gets token, call and
    trajectory events (or, as a plain function, each finished trajectory); timing lands in ``stats``."""
    states = make_states(problems, cfg, engine, n)  # type: ignore[arg-type]
    return run_async_states(states, engine=engine, sandbox=sandbox, cfg=cfg, sampling=sampling, progress=progress,
                            stats=stats)


run_async_rollouts = run_rollouts  # the name before the scheduler served every engine


def run_async_states(
    states: list[TrajectoryState],
    *,
    engine: Engine,
    sandbox: "Sandbox",
    cfg: "RootConfig",
    sampling: SamplingSpec,
    progress: "RolloutEvents | ProgressFn | None" = None,
    stats: RolloutStats | None = None,
) -> "list[Trajectory]":
    """Drive already-built trajectory states to the end (e.g. states that start from a forced prefix)."""
    stats = stats if stats is not None else RolloutStats()
    events = as_events(progress)
    seen_tokens = engine.tokens_generated
    call_deadline = call_deadline_s(cfg)
    ready: deque[TrajectoryState] = deque(states)
    live: dict[str, tuple[TrajectoryState, float]] = {}  # engine key -> (state, submitted at)
    calls: dict[Future[ExecResult], _Call] = {}
    turns: dict[int, int] = {}
    reported: set[int] = set()

    def finished(s: TrajectoryState) -> None:
        if id(s) in reported:
            return
        reported.add(id(s))
        stats.tokens += s.traj.num_model_tokens
        if s.traj.finish_reason == "timeout":
            stats.timeouts += 1
        release_session(s, sandbox)
        events.on_trajectory(s.traj)

    def count_tokens() -> None:
        nonlocal seen_tokens
        now_tokens = engine.tokens_generated
        if now_tokens > seen_tokens:
            events.on_tokens(now_tokens - seen_tokens)
        seen_tokens = now_tokens

    def run_call(code: str, session: str | None, interval: list[float]) -> ExecResult:
        interval[0] = time.perf_counter()
        try:
            return safe_run(sandbox, code, cfg.tool.timeout_s, session)
        finally:
            interval[1] = time.perf_counter()

    start = time.perf_counter()
    workers = max(1, min(cfg.sandbox.pool_size, len(states)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="toolrl-sandbox")
    try:
        while ready or live or calls:
            # 1. everything ready goes to the engine at once: it joins the running batch at the next step
            while ready:
                s = ready.popleft()
                req = s.next_request()  # None when done (also checks the trajectory deadline)
                if req is None:
                    finished(s)
                    continue
                turn = turns.get(id(s), 0)
                turns[id(s)] = turn + 1
                key = f"{s.session_id}/{turn}"
                engine.submit(key, req, sampling)
                live[key] = (s, time.perf_counter())

            # 2. one decode iteration; finished requests either end, continue, or go to the sandbox
            if live:
                t0 = time.perf_counter()
                outs = engine.step()
                stats.gen_intervals.append((t0, time.perf_counter()))
                count_tokens()
                now = time.perf_counter()
                for key, out in outs:
                    if key not in live:  # aborted meanwhile
                        continue
                    s, submitted = live.pop(key)
                    code = s.on_generated(out, gen_time_s=now - submitted)
                    if code is not None:
                        interval = [time.perf_counter(), 0.0]
                        calls[pool.submit(run_call, code, s.session_id, interval)] = _Call(s, time.perf_counter(), interval)
                    elif s.done:
                        finished(s)
                    else:
                        ready.append(s)

            # 3. observations that are back; wait only when the engine has nothing to do
            if calls:
                if live or ready:
                    done = [f for f in calls if f.done()]
                else:
                    done_set, _ = wait(list(calls), timeout=_next_wakeup(calls, call_deadline, cfg),
                                       return_when=FIRST_COMPLETED)
                    done = list(done_set)
                for fut in done:
                    c = calls.pop(fut)
                    stats.call_intervals.append((c.interval[0], c.interval[1]))
                    if c.state.done:  # cut by its deadline while the call ran
                        continue
                    events.on_call()
                    c.state.on_executed(fut.result())
                    if c.state.done:
                        finished(c.state)
                    else:
                        ready.append(c.state)

            # 4. deadlines
            _enforce_deadlines(engine, live, calls, call_deadline, stats, finished)
    except BaseException:
        if live:
            engine.abort(list(live))
        raise
    finally:
        # A call the sandbox never answers must not keep us here: its thread is left to finish on its own.
        pool.shutdown(wait=False, cancel_futures=True)
        stats.wall_s = time.perf_counter() - start
    return [s.traj for s in states]


def _next_wakeup(calls: "dict[Future[ExecResult], _Call]", call_deadline: float, cfg: "RootConfig") -> float:
    """Seconds until the earliest call or trajectory deadline among the running calls (at least 10 ms)."""
    now = time.perf_counter()
    limits = []
    for c in calls.values():
        limits.append(c.started + call_deadline - now)
        limits.append(c.state.started + cfg.rollout.trajectory_timeout_s - time.monotonic())
    return max(0.01, min(limits, default=1.0))


def _enforce_deadlines(
    engine: Engine,
    live: dict[str, tuple[TrajectoryState, float]],
    calls: "dict[Future[ExecResult], _Call]",
    call_deadline: float,
    stats: RolloutStats,
    finished: Callable[[TrajectoryState], None],
) -> None:
    expired = [k for k, (s, _) in live.items() if s.deadline_passed()]
    if expired:
        engine.abort(expired)
        for k in expired:
            s, _ = live.pop(k)
            s.finish("timeout")  # the partial generation of this turn is dropped with the aborted request
            finished(s)
    now = time.perf_counter()
    for fut, c in list(calls.items()):
        if c.state.deadline_passed():
            del calls[fut]
            stats.call_intervals.append((c.interval[0], now))
            stats.abandoned_calls += 1
            c.state.finish("timeout")
            finished(c.state)
        elif now - c.started > call_deadline:
            del calls[fut]
            stats.call_intervals.append((c.interval[0], now))
            stats.abandoned_calls += 1
            c.state.on_executed(
                ExecResult(kind=ExecKind.INFRA, detail=f"the sandbox did not answer within {call_deadline:g} s",
                           duration_s=now - c.started)
            )
            finished(c.state)
