"""Pieces every scheduler shares: the trajectory states of a batch, sandbox calls that never raise, session release.

The scheduler itself is ``toolrl.rollout.async_runner.run_rollouts`` (exported as ``toolrl.rollout.run_rollouts``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from toolrl.config.schema import RootConfig
from toolrl.rollout.agent import TrajectoryState
from toolrl.rollout.engine import Engine
from toolrl.rollout.progress import ProgressFn  # noqa: F401 - re-exported for existing imports
from toolrl.rollout.prompts import encode_prompt
from toolrl.sandbox.base import ExecResult, Sandbox
from toolrl.types import ExecKind, Problem, Trajectory


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


def run_rollouts(problems: Sequence[Problem], **kwargs: Any) -> list[Trajectory]:
    """The one scheduler, ``toolrl.rollout.async_runner.run_rollouts`` (kept here for existing imports)."""
    from toolrl.rollout.async_runner import run_rollouts as run

    return run(problems, **kwargs)


def release_session(state: TrajectoryState, sandbox: Sandbox) -> None:
    """Free what the sandbox holds for a finished trajectory (a stateful session, an E2B sandbox)."""
    if state.traj.calls:
        try:
            sandbox.close_session(state.session_id)
        except Exception:  # noqa: BLE001 - releasing a session must not fail the rollout
            pass
