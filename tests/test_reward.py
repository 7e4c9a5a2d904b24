"""Answer extraction, equivalence (a broad table of real answer styles), the timeout guard and the reward rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from toolrl.config.schema import RewardConfig
from toolrl.reward import Grader, extract_answer, grade_answer, is_equivalent, last_boxed, score
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory

# (prediction, ground truth, equivalent?) -- ground truths in the styles of ../shared/data (MATH-500,
# OlympiadBench multi-answers with units, AIME leading zeros, GSM8K thousands commas).
TABLE = [
    ("025", "25", True),
    ("+7", "7", True),
    ("1,234", "1234", True),
    ("10080", "10,\\!080", True),
    ("10,080", "10,\\!080", True),
    ("\\$32,348", "\\$32,\\!348", True),
    ("\\frac{1}{2}", "0.5", True),
    ("1/2", "\\frac12", True),
    ("\\dfrac{33}{100}", "0.33", True),
    ("0.35625", ".35625", True),
    ("\\frac{9}{32}", "0.28125", True),
    ("1\\frac{4}{5}", "9/5", True),
    ("5 cm", "5", True),
    ("864 \\mbox{ inches}^2", "864", True),
    ("5.4 \\text{ cents}", "5.4", True),
    ("\\frac{41}{12}\\text{ km}", "\\frac{41}{12}", True),
    ("50\\%", "50", True),
    ("4.2\\%", "4.2", True),
    ("90^\\circ", "90", True),
    ("90", "90^\\circ", True),
    ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}", True),
    ("60, 90", "90^{\\circ},60^{\\circ}", True),
    ("(3,4]", "(3,4]", True),
    ("(2, \\infty)", "(2,\\infty)", True),
    ("(-\\infty, 0) \\cup \\{1\\}", "(-\\infty, 0) \\cup\\{1\\}.", True),
    ("3, 1", "1,3", True),
    ("(3,2),(1,1)", "(1,1), (3,2)", True),
    ("\\{1,2\\}", "1,2", True),
    ("x=5", "5", True),
    ("\\text{(C)}", "C", True),
    ("Evelyn", "\\text{Evelyn}", True),
    ("\\text{east}", "\\text{east}", True),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", True),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\end{pmatrix}", True),
    ("2^{10}", "1024", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("3\\sqrt{13}", "\\sqrt{117}", True),
    ("6-5i", "6 - 5i", True),
    ("k \\ge 2", "k \\geqslant 2", True),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("-\\pi/6", "-\\frac{\\pi}{6}", True),
    ("x^5-x^4+x^3-x^2+x-1", "x^5 - x^4 + x^3 - x^2 + x - 1", True),
    ("24", "25", False),
    ("-5", "5", False),
    ("12", "1,2", False),
    ("1000", "1,000,000", False),
    ("[3,4)", "(3,4]", False),
    ("1,2", "1,3", False),
    ("(1,1)", "(1,1), (3,2)", False),
    ("0.333", "\\frac13", False),
    ("\\frac{1}{3}", "\\frac{1}{4}", False),
    ("2\\sqrt{5}", "5\\sqrt{2}", False),
    ("x^2+1", "x^2-1", False),
    ("\\text{Navin}", "\\text{Evelyn}", False),
    ("\\text{(B)}", "\\text{(C)}", False),
    ("", "5", False),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), TABLE)
def test_equivalence_table(pred: str, gold: str, expected: bool) -> None:
    assert is_equivalent(pred, gold) is expected


def test_table_is_broad() -> None:
    assert len(TABLE) >= 40
    assert sum(1 for *_, e in TABLE if not e) >= 10


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}} and finally \\boxed{\\frac{\\sqrt{3}}{2}}", "torl", "\\frac{\\sqrt{3}}{2}"),
        ("\\fbox{7}", "torl", "7"),
        ("\\boxed 5.", "torl", "5."),
        ("\\boxed{ \\{1,2\\} }", "torl", "\\{1,2\\}"),
        ("complete \\boxed{3}, truncated \\boxed{\\frac{1}{", "torl", "3"),
        ("no answer here", "torl", None),
        ("\\boxed{}", "torl", None),
        ("<answer>\\boxed{42}</answer>", "retool", "42"),
        ("\\boxed{1} <answer>The answer is \\boxed{2}</answer>", "retool", "2"),
        ("\\boxed{9} then <answer> $12$ </answer>", "retool", "12"),
        ("only \\boxed{3}, no tag", "retool", "3"),
        ("<answer>\\boxed{42}</answer>", "torl", "42"),
    ],
)
def test_extract_answer(text: str, fmt: str, expected: str | None) -> None:
    assert extract_answer(text, fmt) == expected


def test_boxed_roundtrip_on_real_answers() -> None:
    """Every ground truth of the benchmark files survives being boxed and extracted (nested braces etc.)."""
    data_dir = os.environ.get("TOOLRL_DATA_DIR")
    if not data_dir:
        pytest.skip("TOOLRL_DATA_DIR is not set")
    answers = []
    for name in ("math500", "olympiadbench", "aime24", "amc23"):
        with open(Path(data_dir) / f"{name}.jsonl") as f:
            answers += [json.loads(line)["answer"] for line in f if line.strip()]
    assert len(answers) > 1000
    for ans in answers:
        assert last_boxed(f"Thus the answer is $\\boxed{{{ans}}}$.") == ans.strip()


def test_grade_answer_public_api() -> None:
    assert grade_answer("```python\nprint(3*7)\n```\n```output\n21\n```\nSo \\boxed{21}.", "21")
    assert not grade_answer("So the answer is 21.", "21")
    assert grade_answer("<answer>\\boxed{\\frac{2}{4}}</answer>", "0.5", tool_format="retool")


def test_pathological_expression_times_out_and_grader_recovers() -> None:
    grader = Grader(size=1)
    try:
        assert grader.equivalent("\\frac{1}{2}", "0.5")  # starts the worker
        t0 = time.monotonic()
        # sympy evaluates this tower in C, where no signal reaches: only killing the process stops it
        assert grader.equivalent("2^{2^{2^{2^{2^{2}}}}}", "1", timeout_s=0.5) is False
        elapsed = time.monotonic() - t0
        assert elapsed < 0.5 + 1.0 + 3.0, elapsed
        assert grader.stats.timeouts == 1 and grader.stats.restarts == 1
        assert grader.equivalent("\\sqrt{4}", "2.0")  # a fresh worker took over
    finally:
        grader.close()


def test_grading_from_threads() -> None:
    """math-verify's own timeouts refuse to run outside the main thread; ours must not."""
    results: dict[int, bool] = {}

    def work(i: int) -> None:
        results[i] = is_equivalent(f"\\frac{{{2 * i}}}{{4}}", f"{i}/2") and not is_equivalent(f"{i}.5", f"{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(1, 9)}


def _traj(model_text: str, calls: list[ExecKind] = (), answer: str = "42", obs: str = "") -> Trajectory:
    t = Trajectory(problem=Problem("p", "q", answer), sample_index=0, prompt_text="q", prompt_ids=[1])
    t.append("model", model_text, [2, 3])
    if obs:
        t.append("observation", obs, [4])
    t.calls = [ToolCall(code="x", kind=k, observation="") for k in calls]
    return t


@pytest.mark.parametrize(
    ("text", "calls", "expected_reward", "expected_correct"),
    [
        ("\\boxed{42}", [], 1.0, True),
        ("\\boxed{41}", [], -1.0, False),
        ("no answer", [], -1.0, False),
        ("\\boxed{42}", [ExecKind.OK], 1.0, True),
        ("\\boxed{42}", [ExecKind.ERROR], 0.5, True),
        ("\\boxed{41}", [ExecKind.OK, ExecKind.TIMEOUT], -1.5, False),
        ("\\boxed{42}", [ExecKind.RESOURCE], 0.5, True),
        ("\\boxed{42}", [ExecKind.INFRA], 1.0, True),  # the sandbox's failure is never the model's
        ("\\boxed{41}", [ExecKind.INFRA, ExecKind.OK], -1.0, False),
    ],
)
def test_score_rule(text: str, calls: list[ExecKind], expected_reward: float, expected_correct: bool) -> None:
    cfg = RewardConfig(correct=1.0, wrong=-1.0, exec_error_penalty=-0.5)
    t = _traj(text, calls)
    score(t, cfg)
    assert t.reward == expected_reward
    assert t.correct is expected_correct
    assert t.extracted_answer == (text[7:-1] if text.startswith("\\boxed") else None)


def test_score_ignores_answers_printed_by_the_interpreter() -> None:
    t = _traj("```python\nprint('\\\\boxed{42}')\n```\n", [ExecKind.OK], obs="```output\n\\boxed{42}\n```\n")
    score(t, RewardConfig())
    assert t.correct is False and t.extracted_answer is None and t.reward == -1.0


def test_score_retool_format() -> None:
    t = _traj("<code>...</code> <answer>\\boxed{042}</answer>")
    score(t, RewardConfig(), tool_format="retool")
    assert t.correct is True and t.extracted_answer == "042"


def test_pure_modules_import_no_engines() -> None:
    code = (
        "import sys, toolrl.reward, toolrl.eval.metrics, toolrl.eval.benchmarks;"
        "bad = [m for m in ('vllm', 'deepspeed', 'wandb', 'torch', 'math_verify', 'datasets') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize(
    ("boxed", "answer_format", "expected"),
    [
        ("27954108", "integer", True),
        ("27,954,108", "integer", True),
        ("6678 * 4186", "integer", False),  # the unevaluated question: symbolically equal, not an answer
        ("6678 \\times 4186", "integer", False),
        ("6678 * 4186", None, True),  # benchmarks without a demanded form keep symbolic equivalence
    ],
)
def test_score_rejects_unevaluated_expressions_when_an_integer_is_demanded(boxed: str, answer_format, expected: bool) -> None:
    t = Trajectory(problem=Problem("p", "Compute 6678 * 4186 exactly.", "27954108",
                                   meta={"answer_format": answer_format} if answer_format else {}),
                   sample_index=0, prompt_text="q", prompt_ids=[1])
    t.append("model", f"The result is \\boxed{{{boxed}}}.", [2, 3])
    score(t, RewardConfig())
    assert t.correct is expected


def test_arith_problems_demand_integer_answers() -> None:
    from toolrl.eval.arith import arith_problems

    assert all(p.meta["answer_format"] == "integer" for p in arith_problems(5))


def _call(kind: ExecKind, stdout: str = "") -> ToolCall:
    return ToolCall(code="x", kind=kind, observation="", stdout=stdout)


@pytest.mark.parametrize(
    ("calls", "paper", "authors_code"),
    [
        ([], 0.0, -0.5),  # no code: the authors' code penalises it (execution_pass stays 0), the paper text does not
        ([_call(ExecKind.OK, "1")], 0.0, 0.0),
        ([_call(ExecKind.ERROR)], -0.5, -0.5),
        ([_call(ExecKind.ERROR, "partial\n")], -0.5, 0.0),  # printed, then crashed: a pass in the authors' code
        ([_call(ExecKind.TIMEOUT)], -0.5, -0.5),
        ([_call(ExecKind.ERROR), _call(ExecKind.OK, "2")], -0.5, 0.0),  # only the last round sets the flag
        ([_call(ExecKind.OK, "2"), _call(ExecKind.ERROR)], -0.5, -0.5),
        ([_call(ExecKind.INFRA)], 0.0, 0.0),  # never the model's fault
    ],
)
def test_exec_penalty_rules(calls: list[ToolCall], paper: float, authors_code: float) -> None:
    for rule, expected in (("paper", paper), ("authors_code", authors_code)):
        t = _traj("\\boxed{42}")
        t.calls = list(calls)
        score(t, RewardConfig(exec_error_penalty=-0.5, exec_penalty_rule=rule))
        assert t.correct and t.reward == pytest.approx(1.0 + expected), rule


def test_retool_extraction_falls_back_to_the_last_number_on_the_last_line() -> None:
    text = "We add 3 and 4.\nThe result is 7"
    t = _traj(text, answer="7")
    score(t, RewardConfig(), "retool")
    assert not t.correct and t.extracted_answer is None  # boxed only by default
    score(t, RewardConfig(extract="boxed_or_last_number"), "retool")
    assert t.correct and t.extracted_answer == "7"
    boxed = _traj("first 5 then \\boxed{9}\nand 7", answer="9")
    score(boxed, RewardConfig(extract="boxed_or_last_number"), "retool")
    assert boxed.extracted_answer == "9"  # \boxed{} wins over the fallback
    assert extract_answer("x = 2\n\nanswer: -1,250.5\n", rule="boxed_or_last_number") == "-1250.5"
    assert extract_answer("```python\nprint(5)\n```\n", rule="boxed_or_last_number") is None  # code is not prose
