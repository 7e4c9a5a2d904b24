"""Per-step rollout metrics (pure): what the model did with the tool, computed from trajectories alone.

Names follow docs/architecture.md ("Training metric keys").
"""

from __future__ import annotations

from toolrl.types import ExecKind, Trajectory


def rollout_metrics(trajs: list[Trajectory]) -> dict[str, float]:
    """Reward, accuracy, tool use and sandbox outcome counts over a batch of trajectories.

    - ``reward/mean``, ``acc``: over graded trajectories (reward / correct set); absent when none is graded.
    - ``code/share``: share of responses with at least one executed call.
    - ``code/success_rate``: ok calls / calls that did not fail for infrastructure reasons (a sandbox outage is
      not the model's failure); absent when there is no such call.
    - ``code/calls_per_response``, ``response/len`` (tokens, model + observation), ``obs/token_share``
      (observation tokens / all response tokens).
    - ``sandbox/<kind>``: call counts for every ExecKind (zeros included, so charts have no gaps).
    """
    out: dict[str, float] = {}
    n = len(trajs)
    if n == 0:
        return out
    rewards = [t.reward for t in trajs if t.reward is not None]
    if rewards:
        out["reward/mean"] = sum(rewards) / len(rewards)
    graded = [t.correct for t in trajs if t.correct is not None]
    if graded:
        out["acc"] = sum(1.0 for c in graded if c) / len(graded)

    counts = {k: 0 for k in ExecKind}
    for t in trajs:
        for c in t.calls:
            counts[ExecKind(c.kind)] += 1
    total_calls = sum(counts.values())
    judged = total_calls - counts[ExecKind.INFRA]
    out["code/share"] = sum(1.0 for t in trajs if t.has_code) / n
    if judged:
        out["code/success_rate"] = counts[ExecKind.OK] / judged
    out["code/calls_per_response"] = total_calls / n

    tokens = sum(len(t.response_ids) for t in trajs)
    obs = sum(t.num_observation_tokens for t in trajs)
    out["response/len"] = tokens / n
    out["obs/token_share"] = obs / tokens if tokens else 0.0
    for kind, count in counts.items():
        out[f"sandbox/{kind.value}"] = float(count)
    return out
