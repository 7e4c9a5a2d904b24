"""The batched synchronous scheduler: every active trajectory generates, then every pending call runs at once.

Generation is batched across trajectories; code calls of one turn run concurrently in the sandbox (up to its pool
size). Engines that schedule asynchronously (vLLM) provide their own ``run_rollouts`` and are used instead.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from toolrl.config.schema import RootConfig
from toolrl.rollout.agent import TrajectoryState
from toolrl.rollout.engine import Engine, SamplingSpec
from toolrl.rollout.prompts import encode_prompt
from toolrl.sandbox.base import ExecResult, Sandbox
from toolrl.types import ExecKind, Problem, Trajectory

ProgressFn = Callable[[Trajectory], None]  # called once per finished trajectory


def make_states(problems: Sequence[Problem], cfg: RootConfig, engine: Engine, n: int) -> list[TrajectoryState]:
    """One state per (problem, sample), ordered by problem then sample index.

    Prompt length is not checked here, so a long prompt can never abort a whole batch mid-run: training drops long
    prompts when its data loads (``toolrl.train.data.drop_long_prompts``), evaluation checks every prompt against
    the model's context before it starts (``toolrl.eval.evaluator.check_prompts_fit``).
    """
    states = []
    for p in problems:
        text, ids = encode_prompt(p, cfg, engine.tokenizer)
        for i in range(n):
            traj = Trajectory(problem=p, sample_index=i, prompt_text=text, prompt_ids=list(ids))
            states.append(TrajectoryState(traj, cfg, engine.tokenizer, engine.eos_token_ids))
    return states


def safe_run(sandbox: Sandbox, code: str, timeout_s: float, session: str | None) -> ExecResult:
    """A sandbox that raises is an infrastructure failure, recorded as such, never the model's mistake."""
    start = time.perf_counter()
    try:
        return sandbox.run(code, timeout_s=timeout_s, session=session)
    except Exception as e:  # noqa: BLE001 - any sandbox crash is recorded, never raised into the rollout
        return ExecResult(kind=ExecKind.INFRA, detail=f"{type(e).__name__}: {e}", duration_s=time.perf_counter() - start)


def run_rollouts(
    problems: Sequence[Problem],
    *,
    engine: Engine,
    sandbox: Sandbox,
    cfg: RootConfig,
    sampling: SamplingSpec,
    n: int = 1,
    progress: ProgressFn | None = None,
) -> list[Trajectory]:
    """Generate ``n`` multi-turn tool trajectories per problem. Returns them ordered by problem, then sample."""
    custom = getattr(engine, "run_rollouts", None)
    if callable(custom):
        return custom(problems, sandbox=sandbox, cfg=cfg, sampling=sampling, n=n, progress=progress)

    states = make_states(problems, cfg, engine, n)
    workers = max(1, min(cfg.sandbox.pool_size, len(states)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="toolrl-sandbox") as pool:
        active = list(states)
        while active:
            requests = [(s, s.next_request()) for s in active]
            live = [(s, r) for s, r in requests if r is not None]
            for s, r in requests:
                if r is None:
                    _finished(s, sandbox, progress)
            if not live:
                break
            t0 = time.perf_counter()
            outs = engine.generate([r for _, r in live], sampling)
            gen_s = time.perf_counter() - t0
            calls: list[tuple[TrajectoryState, str]] = []
            for (s, _), out in zip(live, outs):
                # Batched: every trajectory waited for the whole batch, so each is charged its wall time.
                code = s.on_generated(out, gen_time_s=gen_s)
                if code is not None:
                    calls.append((s, code))
            futures = [
                # Every call names its trajectory: stateful backends keep variables per session, E2B reuses one
                # sandbox per trajectory; stateless backends ignore it.
                (s, pool.submit(safe_run, sandbox, code, cfg.tool.timeout_s, s.session_id))
                for s, code in calls
            ]
            for s, fut in futures:
                s.on_executed(fut.result())
            still = []
            for s, _ in live:
                if s.done:
                    _finished(s, sandbox, progress)
                else:
                    still.append(s)
            active = still
    return [s.traj for s in states]


def release_session(state: TrajectoryState, sandbox: Sandbox) -> None:
    """Free what the sandbox holds for a finished trajectory (a stateful session, an E2B sandbox)."""
    if state.traj.calls:
        try:
            sandbox.close_session(state.session_id)
        except Exception:  # noqa: BLE001 - releasing a session must not fail the rollout
            pass


def _finished(state: TrajectoryState, sandbox: Sandbox, progress: ProgressFn | None) -> None:
    if getattr(state, "_reported", False):
        return
    state._reported = True  # type: ignore[attr-defined]
    release_session(state, sandbox)
    if progress is not None:
        progress(state.traj)
