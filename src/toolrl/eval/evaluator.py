"""evaluate(): roll out, score each trajectory as it finishes, compute metrics. Used by `toolrl eval` and the trainer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from toolrl.config.schema import RootConfig
from toolrl.eval.metrics import compute_metrics
from toolrl.reward import score
from toolrl.rollout.engine import Engine, SamplingSpec
from toolrl.sandbox.base import Sandbox
from toolrl.types import Problem, Trajectory


def eval_protocol(cfg: RootConfig) -> tuple[int, SamplingSpec, str]:
    """Samples per problem, the sampling spec and a label, from ``eval.n`` / ``eval.temperature`` / ``eval.top_p``.

    One rule for `toolrl eval` and for the trainer's periodic evaluation: ``n = 1`` without ``eval.temperature``
    is greedy pass@1 (ToRL's protocol); otherwise responses are sampled at ``eval.temperature`` (default
    ``rollout.temperature``) and ``eval.top_p`` (default ``rollout.top_p``), e.g. ReTool's avg@32 at 1.0 / 0.7.

    >>> from toolrl.config.schema import RootConfig
    >>> cfg = RootConfig()
    >>> eval_protocol(cfg)[1].temperature, eval_protocol(cfg)[2]
    (0.0, 'greedy pass@1')
    >>> cfg.eval.n, cfg.eval.temperature, cfg.eval.top_p = 32, 1.0, 0.7
    >>> eval_protocol(cfg)[2]
    'n=32 t=1 top_p=0.7'
    """
    from toolrl.rollout import sampling_from_config

    n, e = cfg.eval.n, cfg.eval
    if n == 1 and e.temperature is None:
        return 1, sampling_from_config(cfg, greedy=True), "greedy pass@1"
    sampling = sampling_from_config(cfg, temperature=e.temperature, top_p=e.top_p)
    return n, sampling, f"n={n} t={sampling.temperature:g} top_p={sampling.top_p:g}"


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
    progress: Callable[[Trajectory], None] | None = None,
) -> EvalResult:
    """``n`` trajectories per problem, each scored with ``cfg.reward``; ``progress`` sees each one scored."""
    from toolrl.rollout.loop import run_rollouts

    fmt = cfg.tool.format

    def on_done(traj: Trajectory) -> None:
        score(traj, cfg.reward, fmt)
        if progress is not None:
            progress(traj)

    start = time.perf_counter()
    trajs = run_rollouts(problems, engine=engine, sandbox=sandbox, cfg=cfg, sampling=sampling, n=n, progress=on_done)
    for t in trajs:  # a scheduler that skipped the callback for some trajectory must not leave it unscored
        if t.correct is None:
            score(t, cfg.reward, fmt)
    elapsed = time.perf_counter() - start
    metrics = compute_metrics(trajs)
    metrics["time/eval_s"] = elapsed
    return EvalResult(metrics=metrics, trajectories=trajs, n=n, sampling=sampling, elapsed_s=elapsed)
