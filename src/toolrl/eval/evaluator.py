"""evaluate(): roll out, score each trajectory as it finishes, compute metrics. Used by `toolrl eval` and the trainer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from toolrl.config.schema import RootConfig
from toolrl.errors import DataError
from toolrl.eval.metrics import compute_metrics
from toolrl.reward import score
from toolrl.rollout.engine import Engine, SamplingSpec
from toolrl.sandbox.base import Sandbox
from toolrl.types import Problem, Trajectory

if TYPE_CHECKING:
    from toolrl.rollout.progress import RolloutEvents


# A tokenizer without a real limit reports a huge sentinel (about 1e30) as model_max_length.
_NO_LIMIT = 10**7


def model_context(engine: Engine) -> int | None:
    """Longest prompt + response the engine's model takes: vLLM's max_model_len, the model config's
    max_position_embeddings, the tokenizer's model_max_length (the smallest known); None when none is known."""
    found = [getattr(engine, "max_model_len", None),
             getattr(getattr(getattr(engine, "model", None), "config", None), "max_position_embeddings", None),
             getattr(getattr(engine, "tokenizer", None), "model_max_length", None)]
    known = [int(x) for x in found if isinstance(x, int) and 0 < x < _NO_LIMIT]
    return min(known) if known else None


def check_prompts_fit(problems: Sequence[Problem], cfg: RootConfig, engine: Engine) -> int | None:
    """Evaluation scores every problem, so its prompt budget is the model's context minus rollout.max_new_tokens
    (rollout.max_prompt_tokens only filters training data). Raises DataError naming the first problem that cannot
    fit at all; returns the budget (None = no known limit)."""
    from toolrl.rollout.prompts import prompt_lengths

    context = model_context(engine)
    if context is None:
        return None
    budget = context - cfg.rollout.max_new_tokens
    for p, n in zip(problems, prompt_lengths(problems, cfg, engine.tokenizer)):
        if n > budget:
            raise DataError(
                f"problem '{p.id}' has a {n}-token prompt: with rollout.max_new_tokens={cfg.rollout.max_new_tokens} "
                f"it does not fit the model's {context}-token context",
                "lower rollout.max_new_tokens, or raise rollout.vllm.max_model_len if the model allows it",
            )
    return budget


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
    progress: "RolloutEvents | Callable[[Trajectory], None] | None" = None,
) -> EvalResult:
    """``n`` trajectories per problem, each scored with ``cfg.reward``; ``progress`` gets the scheduler's events
    (tokens, calls) and sees each trajectory once it is scored."""
    from toolrl.rollout import run_rollouts
    from toolrl.rollout.progress import before_trajectory

    fmt = cfg.tool.format
    check_prompts_fit(problems, cfg, engine)  # every problem is scored: fail before any generation, never mid-way

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
