"""Rollouts record the code blocks that did not run, and the LLM purpose labeller talks to a real Engine."""

from __future__ import annotations

import pytest

from test_agent import RecordingSandbox, _run  # the scripted engine of the agent tests

from toolrl.analysis.llm_labels import label_blocks
from toolrl.rollout.engine import GenOutput
from toolrl.types import Trajectory


def test_blocks_after_the_call_limit_are_recorded_as_unexecuted(tokenizer) -> None:
    turns = ["```python\nprint(1)\n```\n",
             "Again:\n```python\nprint(2)\n```\nand\n```python\nx = 3\nprint(x)\n```\nso \\boxed{1}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns, ["tool.max_calls=1"])
    assert [c for c, _ in sandbox.calls] == ["print(1)"]
    assert traj.unexecuted_blocks == ["print(2)", "x = 3\nprint(x)"]
    # Saved and read back; a line written before the field existed still loads, as "not recorded".
    d = traj.to_dict()
    assert Trajectory.from_dict(d).unexecuted_blocks == traj.unexecuted_blocks
    del d["unexecuted_blocks"]
    assert Trajectory.from_dict(d).unexecuted_blocks is None


def test_every_block_runs_while_calls_remain(tokenizer) -> None:
    turns = ["```python\nprint(1)\n```\n", "```python\nprint(2)\n```\n", "\\boxed{2}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns, ["tool.max_calls=3"], sandbox=RecordingSandbox())
    assert len(sandbox.calls) == 2 and traj.unexecuted_blocks == []


def test_retool_blocks_after_the_limit(tokenizer) -> None:
    turns = ["<code>\n```python\nprint(1)\n```\n</code>",
             "more <code>\n```python\nprint(9)\n```\n</code> <answer>\\boxed{1}</answer>"]
    (traj,), _, _ = _run(tokenizer, turns, ["tool.format=retool", "tool.max_calls=1"])
    assert traj.unexecuted_blocks == ["print(9)"]


class _AnsweringEngine:
    """Answers a label question from the code it is shown (a stand-in for a model that knows the answer)."""

    def __init__(self, tokenizer, answers: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.answers = answers

    def generate(self, requests, sampling):
        outs = []
        for r in requests:
            prompt = self.tokenizer.decode(r.prompt_ids)
            word = next(a for key, a in self.answers.items() if key in prompt)
            outs.append(GenOutput(self.tokenizer(word, add_special_tokens=False)["input_ids"], "stop", "\n"))
        return outs

    def close(self) -> None:
        pass


def test_llm_labels_are_parsed_counted_and_compared_with_the_rules(tokenizer) -> None:
    codes = ["print(17 * 23)", "from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x - 1, x))",
             "for i in range(9):\n    if i * i == 49:\n        print(i)"]
    engine = _AnsweringEngine(tokenizer, {"17 * 23": " Arithmetic.", "solve": "symbolic", "range(9)": "I am unsure"})
    res = label_blocks(codes, engine, batch_size=2)
    assert res["labels"] == ["arithmetic", "symbolic", None]
    assert res["unparsed"] == 1 and res["counts"]["arithmetic"] == 1 and res["shares"]["symbolic"] == 0.5
    assert res["agreement_with_rules"] == 1.0
    assert res["rules_shares"]["enumeration"] == pytest.approx(1 / 3)  # the rules label the same three blocks


@pytest.mark.slow
def test_llm_labeller_runs_through_a_real_engine(tiny_model_dir) -> None:
    from toolrl.config import load_config
    from toolrl.rollout import build_engine

    engine = build_engine(load_config(None, [f"model.path={tiny_model_dir}", "run.device=cpu"]))
    try:
        res = label_blocks(["print(1 + 1)", "print('hi')"], engine)
    finally:
        engine.close()
    assert res["blocks"] == 2 and res["unparsed"] + sum(res["counts"].values()) == 2
