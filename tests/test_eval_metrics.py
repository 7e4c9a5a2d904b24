"""Metrics on hand-built trajectories, checked against numbers computed by hand."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from toolrl.eval.metrics import accuracy_metrics, compute_metrics, majority_index, pass_at_k, tool_metrics
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory


def _eq(a: str, b: str) -> bool:
    return Fraction(a) == Fraction(b)


def _t(pid: str, i: int, answer: str | None, correct: bool, calls=(), model_tokens: int = 3, obs_tokens: int = 0,
       finish: str = "eos") -> Trajectory:
    t = Trajectory(problem=Problem(pid, "q", "?"), sample_index=i, prompt_text="q", prompt_ids=[1], finish_reason=finish)
    t.append("model", "m", list(range(model_tokens)))
    if obs_tokens:
        t.append("observation", "o", list(range(obs_tokens)))
    t.calls = [ToolCall(code="c", kind=k, observation="") for k in calls]
    t.extracted_answer, t.correct = answer, correct
    return t


def _sampled() -> list[Trajectory]:
    rows = {
        "p1": [("5", True), ("5", True), ("6", False), (None, False)],
        "p2": [("1/2", True), ("0.5", True), ("3", False), ("3", False)],  # 2-2 tie: the earlier group wins
        "p3": [("7", True), ("8", False), ("8", False), (None, False)],  # the majority is wrong
    }
    # shuffled input order: grouping must not depend on it
    trajs = [_t(pid, i, a, c) for pid, samples in rows.items() for i, (a, c) in enumerate(samples)]
    return trajs[::-1]


def test_sampled_accuracy_hand_computed() -> None:
    m = accuracy_metrics(_sampled(), equivalent=_eq)
    assert m["acc"] == pytest.approx(5 / 12)
    assert m["avg@4"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4) / 3)
    assert m["pass@1"] == pytest.approx(m["avg@4"])  # unbiased pass@1 is the mean accuracy
    assert m["pass@2"] == pytest.approx((5 / 6 + 5 / 6 + 1 / 2) / 3)
    assert m["pass@4"] == 1.0
    assert m["maj@4"] == pytest.approx(2 / 3)
    assert set(m) == {"acc", "avg@4", "pass@1", "pass@2", "pass@4", "maj@4"}


def test_greedy_reports_pass_at_1_only() -> None:
    trajs = [_t("a", 0, "1", True), _t("b", 0, "2", False), _t("c", 0, None, False), _t("d", 0, "4", True)]
    assert accuracy_metrics(trajs, equivalent=_eq) == {"acc": 0.5, "pass@1": 0.5}


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_pass_at_k_matches_the_binomial_formula(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_majority_uses_equivalence_not_strings() -> None:
    # "0.5" and "1/2" are one answer with 2 votes; "3" has one
    assert majority_index(["3", "0.5", "1/2"], _eq) == 1
    assert majority_index(["3", "0.5", "1/2"], lambda a, b: a == b) == 0  # string votes would tie and pick "3"
    assert majority_index([None, None], _eq) is None


def test_unscored_trajectories_are_rejected() -> None:
    t = _t("a", 0, "1", True)
    t.correct = None
    with pytest.raises(ValueError, match="scored"):
        accuracy_metrics([t])


def test_tool_metrics_hand_computed() -> None:
    trajs = [
        _t("a", 0, "1", True, calls=[ExecKind.OK], model_tokens=4, obs_tokens=2),
        _t("b", 0, "1", True, calls=[ExecKind.ERROR, ExecKind.OK], model_tokens=3, obs_tokens=3),
        _t("c", 0, "1", True, calls=[ExecKind.INFRA], model_tokens=2, obs_tokens=1),
        _t("d", 0, "1", True, model_tokens=5),
    ]
    m = tool_metrics(trajs)
    assert m["code/share"] == 0.75
    assert m["code/success_rate"] == pytest.approx(2 / 3)  # the infra failure is not the model's
    assert m["code/calls_per_response"] == 1.0
    assert m["response/len"] == 5.0
    assert m["obs/token_share"] == pytest.approx(6 / 20)
    assert (m["sandbox/ok"], m["sandbox/error"], m["sandbox/timeout"], m["sandbox/resource_limit"]) == (2, 1, 0, 0)
    assert m["sandbox/infra_error"] == 1 and m["sandbox/infra_trajectories"] == 1


def test_success_rate_undefined_without_judged_calls() -> None:
    m = tool_metrics([_t("a", 0, "1", True, calls=[ExecKind.INFRA]), _t("b", 0, "1", True)])
    assert m["code/success_rate"] is None


def test_compute_metrics_counts() -> None:
    trajs = _sampled()
    trajs[0].finish_reason = "length"
    m = compute_metrics(trajs, equivalent=_eq)
    assert (m["num_problems"], m["num_samples"]) == (3, 12)
    assert m["finish/length"] == 1 and m["finish/eos"] == 11
