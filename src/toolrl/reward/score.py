"""Public grading API and the reward rule.

Reward rule (``score``), exactly:
    reward = reward.correct  if the extracted answer is equivalent to the ground truth
             reward.wrong    otherwise (wrong answer, or no final answer at all)
    A task that fixes the answer's form (``Problem.meta["answer_format"] == "integer"``, e.g. the built-in
    arithmetic task) also requires the extracted answer to be an integer literal: symbolic equivalence would
    otherwise accept the unevaluated question (``\\boxed{6678 * 4186}``), a reward hack GRPO found within 8 steps.
    reward += reward.exec_error_penalty  if any tool call in the response has kind error, timeout or
                                         resource_limit (the model's own code failed)
A call with kind infra_error (the sandbox broke) never triggers the penalty; such trajectories are marked
``infra_failed`` and training drops them instead of punishing the model.
"""

from __future__ import annotations

import re

from toolrl.config.schema import RewardConfig
from toolrl.reward.extract import extract_answer
from toolrl.reward.grader import default_grader
from toolrl.types import Trajectory


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


def score(traj: Trajectory, cfg: RewardConfig, tool_format: str = "torl") -> None:
    """Fill ``traj.extracted_answer``, ``traj.correct`` and ``traj.reward`` by the rule in this module's doc."""
    # The whole response, so code fences pair up; extraction skips code blocks and interpreter output.
    pred = extract_answer(traj.response_text, tool_format)
    correct = (
        pred is not None
        and answer_form_ok(pred, traj.problem.meta.get("answer_format"))
        and is_equivalent(pred, traj.problem.answer, cfg.grade_timeout_s)
    )
    reward = cfg.correct if correct else cfg.wrong
    if traj.code_failed:  # ExecKind.is_model_failure: error, timeout, resource_limit; never infra_error
        reward += cfg.exec_error_penalty
    traj.extracted_answer = pred
    traj.correct = correct
    traj.reward = float(reward)
