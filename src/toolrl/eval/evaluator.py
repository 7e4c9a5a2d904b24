"""evaluate(): roll out, score each trajectory as it finishes, compute metrics. Used by `toolrl eval` and the trainer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from toolrl.config.schema import RootConfig
from toolrl.eval.metrics import compute_metrics
from toolrl.reward import score
from toolrl.rollout.engine import Engine, SamplingSpec
from toolrl.sandbox.base import Sandbox
from toolrl.types import Problem, Trajectory

if TYPE_CHECKING:
    from toolrl.rollout.progress import RolloutEvents


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    trajectories: list[Trajectory]
    n: int
    sampling: SamplingSpec
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(
    problems: Sequence[Problem],
    *,
    cfg: RootConfig,
    engine: Engine,
    sandbox: Sandbox,
    n: int,
    sampling: SamplingSpec,
    progress: "RolloutEvents | Callable[[Trajectory], None] | None" = None,
) -> EvalResult:
    """``n`` trajectories per problem, each scored with ``cfg.reward``; ``progress`` gets the scheduler's events
    (tokens, calls) and sees each trajectory once it is scored."""
    from toolrl.rollout import run_rollouts
    from toolrl.rollout.progress import before_trajectory

    fmt = cfg.tool.format

    def on_done(traj: Trajectory) -> None:
        score(traj, cfg.reward, fmt)

    start = time.perf_counter()
    trajs = run_rollouts(problems, engine=engine, sandbox=sandbox, cfg=cfg, sampling=sampling, n=n,
                         progress=before_trajectory(progress, on_done))
    for t in trajs:  # a scheduler that skipped the callback for some trajectory must not leave it unscored
        if t.correct is None:
            score(t, cfg.reward, fmt)
    elapsed = time.perf_counter() - start
    metrics = compute_metrics(trajs)
    metrics["time/eval_s"] = elapsed
    return EvalResult(metrics=metrics, trajectories=trajs, n=n, sampling=sampling, elapsed_s=elapsed)
