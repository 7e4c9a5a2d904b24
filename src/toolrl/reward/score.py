"""Public grading API and the reward rule.

Reward rule (``score``), exactly:
    reward = reward.correct  if the extracted answer is equivalent to the ground truth
             reward.wrong    otherwise (wrong answer, or no final answer at all)
    A task that fixes the answer's form (``Problem.meta["answer_format"] == "integer"``, e.g. the built-in
    arithmetic task) also requires the extracted answer to be an integer literal: symbolic equivalence would
    otherwise accept the unevaluated question (``\\boxed{6678 * 4186}``), a reward hack GRPO found within 8 steps.
    reward += reward.exec_error_penalty  when the response breaks reward.exec_penalty_rule:
      paper         any tool call has kind error, timeout or resource_limit (the model's own code failed):
                    the ToRL paper's "non-executable code"
      authors_code  the last execution did not pass, and responses without any execution count as not passing;
                    a call that printed something before it failed counts as a pass (ToRL's released code,
                    whose execution_pass flag each round overwrites)
A call with kind infra_error (the sandbox broke) never triggers the penalty; such trajectories are marked
``infra_failed`` and training drops them instead of punishing the model.
The answer is extracted by reward.extract: boxed, or boxed_or_last_number (ReTool's evaluation code).
"""

from __future__ import annotations

import re

from toolrl.config.schema import RewardConfig
from toolrl.reward.extract import extract_answer
from toolrl.reward.grader import default_grader
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory  # noqa: F401 - Problem: used by the doctests


def is_equivalent(pred: str, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether two final answers are mathematically the same; a comparison over ``timeout_s`` counts as False.

    Safe to call from any thread (symbolic checks run in a separate, killable process).

    >>> is_equivalent("025", "25"), is_equivalent(r"\\frac{1}{2}", "0.5"), is_equivalent("5 cm", "5")
    (True, True, True)
    >>> is_equivalent("(1,1), (3,2)", "(3,2),(1,1)"), is_equivalent("[3,4)", "(3,4]")
    (True, False)
    """
    if not pred.strip():
        return False
    return default_grader().equivalent(pred, gold, timeout_s)


def grade_answer(response: str, answer: str, tool_format: str = "torl", timeout_s: float = 5.0) -> bool:
    """Stable public check: does ``response`` end with a final answer equal to ``answer``?

    >>> grade_answer(r"The product is $\\boxed{1,234}$.", "1234")
    True
    >>> grade_answer("The product is 1234.", "1234")  # no boxed answer: not graded as correct
    False
    """
    pred = extract_answer(response, tool_format)
    return pred is not None and is_equivalent(pred, answer, timeout_s)


def answer_form_ok(pred: str, answer_format: str | None) -> bool:
    """Whether ``pred`` has the form a task demands; tasks without a demanded form accept any form.

    >>> answer_form_ok("27,954,108", "integer"), answer_form_ok("6678 * 4186", "integer"), answer_form_ok("2^{10}", None)
    (True, False, True)
    """
    if answer_format != "integer":
        return True
    literal = pred.strip().strip("$").replace("{,}", "").replace(",", "").replace(" ", "")
    return re.fullmatch(r"[-+]?\d+", literal) is not None


def passed(call: ToolCall) -> bool:
    """ToRL's released code: a call passes when it ran cleanly, or printed something before it failed."""
    if call.kind == ExecKind.OK:
        return True
    return call.kind.is_model_failure and bool(call.stdout.strip())


def exec_penalised(traj: Trajectory, rule: str) -> bool:
    """Whether ``traj`` gets reward.exec_error_penalty under ``rule`` (paper | authors_code).

    >>> ok = ToolCall("print(1)", ExecKind.OK, "", stdout="1")
    >>> crashed = ToolCall("1/0", ExecKind.ERROR, "")
    >>> printed_then_crashed = ToolCall("print(1); 1/0", ExecKind.ERROR, "", stdout="1")
    >>> t = lambda *calls: Trajectory(Problem("1", "q", "a"), 0, "", [], calls=list(calls))
    >>> [exec_penalised(t(), r) for r in ("paper", "authors_code")]  # no code at all
    [False, True]
    >>> [exec_penalised(t(crashed, ok), r) for r in ("paper", "authors_code")]  # the last call passed
    [True, False]
    >>> [exec_penalised(t(printed_then_crashed), r) for r in ("paper", "authors_code")]
    [True, False]
    """
    if traj.infra_failed:  # the sandbox's fault, never the model's; training drops the trajectory
        return False
    if rule == "authors_code":
        return not traj.calls or not passed(traj.calls[-1])
    return traj.code_failed  # ExecKind.is_model_failure: error, timeout, resource_limit


def score(traj: Trajectory, cfg: RewardConfig, tool_format: str = "torl") -> None:
    """Fill ``traj.extracted_answer``, ``traj.correct`` and ``traj.reward`` by the rule in this module's doc."""
    # The whole response, so code fences pair up; extraction skips code blocks and interpreter output.
    pred = extract_answer(traj.response_text, tool_format, cfg.extract)
    correct = (
        pred is not None
        and answer_form_ok(pred, traj.problem.meta.get("answer_format"))
        and is_equivalent(pred, traj.problem.answer, cfg.grade_timeout_s)
    )
    reward = cfg.correct if correct else cfg.wrong
    if cfg.exec_error_penalty and exec_penalised(traj, cfg.exec_penalty_rule):
        reward += cfg.exec_error_penalty
    traj.extracted_answer = pred
    traj.correct = correct
    traj.reward = float(reward)
