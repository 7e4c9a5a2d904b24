"""Prompt construction: the tool prompt at C = 0 when asked (ToRL's numcall=0), and template files (ReTool Fig. 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolrl.config import load_config
from toolrl.errors import ConfigError
from toolrl.rollout.prompts import INSTRUCTIONS, render_prompt
from toolrl.types import Problem

P = Problem("p", "What is $\\{1, 2\\}$ times 3?", "9")


@pytest.mark.parametrize(("overrides", "expected"), [
    (["tool.max_calls=0"], "text"),  # auto: no executions, no tool instruction
    (["tool.max_calls=0", "prompt.instruction=tool"], "torl"),  # ToRL's C = 0 arm keeps the tool prompt
    (["tool.max_calls=1", "prompt.instruction=text"], "text"),
    (["tool.max_calls=-1"], "torl"),
])
def test_instruction_choice(tokenizer, overrides: list[str], expected: str) -> None:
    text = render_prompt(P, load_config(None, ["prompt.template=raw", *overrides]), tokenizer)
    assert INSTRUCTIONS[expected] in text and P.problem in text


def test_retool_template_file_is_the_whole_user_message(tokenizer) -> None:
    cfg = load_config("retool_32b", ["model.path=null"])
    text = render_prompt(P, cfg, tokenizer)
    assert "*user question:*\n" + P.problem + "\n\nRemember to place the final answer" in text
    assert "\\boxed{'The final answer goes here.'}" in text  # literal braces survive (no str.format)
    assert "complete scripts, including necessary imports" in text
    assert text.startswith("<|im_start|>") and text.rstrip().endswith("assistant")  # inside the chat template
    raw = render_prompt(P, load_config("retool_32b", ["model.path=null", "prompt.template=raw"]), tokenizer)
    assert raw.startswith("Solve the following problem step by step.") and "<|im_start|>" not in raw


def test_template_file_errors_are_one_line_with_a_hint(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:  # checked when the config loads: a sweep dry-run catches it too
        load_config(None, ["prompt.file=nope"])
    assert "retool" in (e.value.hint or "")
    no_slot = tmp_path / "t.txt"
    no_slot.write_text("Solve it.")
    with pytest.raises(ConfigError, match="no \\{question\\} slot"):
        load_config(None, [f"prompt.file={no_slot}"])
    mine = tmp_path / "mine.txt"
    mine.write_text("Q: {question}\nA:")
    assert "Q: " + P.problem + "\nA:" in render_prompt(P, load_config(None, [f"prompt.file={mine}"]), tokenizer)
