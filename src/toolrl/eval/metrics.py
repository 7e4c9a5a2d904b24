"""Evaluation metrics from scored trajectories (pure: no engine, no I/O).

Accuracy, for trajectories grouped by problem (n samples each):
- ``pass@1`` with n = 1: the share of problems answered correctly (greedy decoding gives ToRL's number).
- ``avg@n``: mean accuracy over all samples (ReTool's avg@32).
- ``pass@k`` (k <= n): chance that at least one of k samples is correct, unbiased estimator of Chen et al. 2021.
- ``maj@n``: correctness of the majority answer (votes compared by equivalence, not by string).
Tool use (keys shared with training metrics): ``code/share``, ``code/success_rate``, ``code/calls_per_response``,
``response/len``, ``obs/token_share``, ``sandbox/<kind>`` and ``sandbox/infra_trajectories``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from toolrl.types import ExecKind, Trajectory

Equivalent = Callable[[str, str], bool]


def group_by_problem(trajs: Sequence[Trajectory]) -> list[list[Trajectory]]:
    """Trajectories grouped by problem id, groups in first-seen order, samples sorted by sample_index."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault(t.problem.id, []).append(t)
    return [sorted(g, key=lambda t: t.sample_index) for g in groups.values()]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # product form of C(n-c, k) / C(n, k): no huge binomials
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def majority_index(answers: Sequence[str | None], equivalent: Equivalent) -> int | None:
    """Index of the first sample of the largest group of equivalent answers; None when nobody answered.

    Ties go to the group whose first member came earliest, so the vote is deterministic.

    >>> majority_index(["1/2", "3", "0.5", "3"], lambda a, b: eval(a) == eval(b))
    0
    >>> majority_index([None, "7", None], lambda a, b: a == b), majority_index([None], lambda a, b: a == b)
    (1, None)
    """
    clusters: list[list[int]] = []  # indices; clusters[i][0] is the representative
    for i, a in enumerate(answers):
        if a is None:
            continue
        for cl in clusters:
            rep = answers[cl[0]]
            assert rep is not None
            if a == rep or equivalent(a, rep):
                cl.append(i)
                break
        else:
            clusters.append([i])
    if not clusters:
        return None
    best = max(clusters, key=lambda cl: (len(cl), -cl[0]))
    return best[0]


def _default_equivalent(a: str, b: str) -> bool:
    from toolrl.reward import is_equivalent

    return is_equivalent(a, b)


def _ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < n]
    return ks + [n]


def accuracy_metrics(trajs: Sequence[Trajectory], equivalent: Equivalent | None = None) -> dict[str, float]:
    """pass@1 (n = 1), or avg@n, pass@k for k in 1, 2, 4, ... n, and maj@n (n > 1). Also ``acc`` (= mean)."""
    if any(t.correct is None for t in trajs):
        raise ValueError("every trajectory must be scored (toolrl.reward.score) before computing metrics")
    groups = group_by_problem(trajs)
    if not groups:
        return {}
    n = min(len(g) for g in groups)
    out: dict[str, float] = {"acc": sum(bool(t.correct) for t in trajs) / len(trajs)}
    if n == 1 and max(len(g) for g in groups) == 1:
        out["pass@1"] = out["acc"]
        return out
    eq = equivalent or _default_equivalent
    out[f"avg@{n}"] = sum(sum(bool(t.correct) for t in g) / len(g) for g in groups) / len(groups)
    for k in _ks(n):
        out[f"pass@{k}"] = sum(pass_at_k(len(g), sum(bool(t.correct) for t in g), k) for g in groups) / len(groups)
    maj = 0
    for g in groups:
        idx = majority_index([t.extracted_answer for t in g], eq)
        maj += idx is not None and bool(g[idx].correct)
    out[f"maj@{n}"] = maj / len(groups)
    return out


def tool_metrics(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Tool-use statistics; ``code/success_rate`` is None when no call counts (no calls, or only infra ones)."""
    if not trajs:
        return {}
    calls = [c for t in trajs for c in t.calls]
    counts = {k: sum(c.kind == k for c in calls) for k in ExecKind}
    judged = len(calls) - counts[ExecKind.INFRA]  # infra failures say nothing about the model's code
    resp_tokens = sum(len(t.response_ids) for t in trajs)
    obs_tokens = sum(t.num_observation_tokens for t in trajs)
    out: dict[str, Any] = {
        "code/share": sum(t.has_code for t in trajs) / len(trajs),
        "code/success_rate": counts[ExecKind.OK] / judged if judged else None,
        "code/calls_per_response": len(calls) / len(trajs),
        "response/len": resp_tokens / len(trajs),
        "obs/token_share": obs_tokens / resp_tokens if resp_tokens else 0.0,
    }
    out.update({f"sandbox/{k.value}": v for k, v in counts.items()})
    out["sandbox/infra_trajectories"] = sum(t.infra_failed for t in trajs)
    return out


def compute_metrics(trajs: Sequence[Trajectory], equivalent: Equivalent | None = None) -> dict[str, Any]:
    """Accuracy and tool metrics, plus problem and sample counts."""
    out: dict[str, Any] = {"num_problems": len(group_by_problem(trajs)), "num_samples": len(trajs)}
    out.update(accuracy_metrics(trajs, equivalent))
    out.update(tool_metrics(trajs))
    finishes: dict[str, int] = {}
    for t in trajs:
        finishes[t.finish_reason] = finishes.get(t.finish_reason, 0) + 1
    out.update({f"finish/{k}": v for k, v in sorted(finishes.items())})
    return out
