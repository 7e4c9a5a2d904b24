"""Pure tool-format logic: where calls happen, what code runs, what the model is shown."""

from __future__ import annotations

import pytest

from toolrl.rollout.formats import (
    RETOOL,
    TORL,
    extract_call,
    render_observation,
    observation_body,
    sanitize_text,
    truncate_middle,
)
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Compute.\n```python\nprint(2+2)\n```\n", "print(2+2)"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("```py\nx=1\nprint(x)\n```\n```output", "x=1\nprint(x)"),
        # several blocks: the last one, which just closed, runs
        ("```python\na=1\n```\nthen\n```python\nprint(3)\n```\n", "print(3)"),
        # unclosed block: nothing to run yet
        ("```python\nprint(1)\n", None),
        # a closed non-python block is not a call
        ("```text\nhello\n```\n", None),
        # the opening fence of an untagged block is not a call
        ("Here:\n```\n", None),
        # a python block followed by more prose is not due
        ("```python\nprint(1)\n```\nSo the answer is", None),
        # empty code is not a call
        ("```python\n\n```\n", None),
    ],
)
def test_extract_call_torl(text: str, code: str | None) -> None:
    assert extract_call(text, TORL) == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("<code>\n```python\nprint(6*7)\n```\n</code>", "print(6*7)"),
        ("<code>print(5)</code>", "print(5)"),
        ("<code>a=1</code> then <code>\nprint(a)\n</code>", "print(a)"),
        ("<code>print(1)", None),
        ("<answer>\\boxed{3}</answer>", None),
    ],
)
def test_extract_call_retool(text: str, code: str | None) -> None:
    assert extract_call(text, RETOOL) == code


def test_truncate_middle_keeps_head_and_tail() -> None:
    text = "H" * 200 + "M" * 1000 + "T" * 200
    out = truncate_middle(text, 256)
    assert out == "H" * 128 + "..." + "T" * 128
    assert truncate_middle("abc", 256) == "abc"


def test_huge_output_is_truncated_in_observation() -> None:
    r = ExecResult(kind=ExecKind.OK, stdout="x" * 100_000)
    obs = render_observation(r, TORL, max_chars=256, timeout_s=5)
    assert obs.startswith("```output\n") and obs.endswith("\n```\n")
    assert len(obs) < 300 and "..." in obs


def test_error_shows_last_traceback_line_only() -> None:
    tb = 'Traceback (most recent call last):\n  File "<code>", line 1, in <module>\nZeroDivisionError: division by zero'
    r = ExecResult(kind=ExecKind.ERROR, stdout="partial\n", stderr=tb, error_name="ZeroDivisionError",
                   error_line="ZeroDivisionError: division by zero")
    assert observation_body(r, 5.0) == "partial\nZeroDivisionError: division by zero"
    assert "Traceback" in observation_body(r, 5.0, error_last_line_only=False)


def test_timeout_and_resource_and_infra_observations() -> None:
    assert "TimeoutError" in observation_body(ExecResult(kind=ExecKind.TIMEOUT), 3.0)
    assert "3 seconds" in observation_body(ExecResult(kind=ExecKind.TIMEOUT), 3.0)
    assert "MemoryError" in observation_body(ExecResult(kind=ExecKind.RESOURCE, detail="memory limit"), 3.0)
    assert "SandboxError" in observation_body(ExecResult(kind=ExecKind.INFRA), 3.0)


def test_torl_observation_completes_model_written_output_opener() -> None:
    r = ExecResult(kind=ExecKind.OK, stdout="42\n")
    assert render_observation(r, TORL, max_chars=256, timeout_s=5, turn_text="```python\nprint(42)\n```\n```output") == "\n42\n```\n"
    # no trailing newline after the fence: the output block starts on its own line
    assert render_observation(r, TORL, max_chars=256, timeout_s=5, turn_text="```python\nprint(42)\n```").startswith("\n```output")


def test_retool_observation_uses_interpreter_tags() -> None:
    obs = render_observation(ExecResult(kind=ExecKind.OK, stdout="7"), RETOOL, max_chars=400, timeout_s=5)
    assert obs == "\n<interpreter>\n7\n</interpreter>\n"


def test_non_utf8_output_is_sanitized() -> None:
    assert sanitize_text(b"ok \xff\xfe\x00end") == "ok \ufffd\ufffdend"


def test_stop_strings_follow_calls_left() -> None:
    assert "```\n" in TORL.stops(1) and TORL.stops(0) == []
    assert RETOOL.stops(0) == ["</answer>"] and "</code>" in RETOOL.stops(2)
