"""The multi-turn state machine and the batched loop, driven by a scripted engine and the real tokenizer.

The engine here replays fixed model texts (as token ids) so that every branch is exercised deterministically;
real-model runs are in test_rollout_e2e.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from toolrl.config import load_config
from toolrl.rollout.engine import BatchedSteps, GenOutput, GenRequest, SamplingSpec
from toolrl.rollout.loop import run_rollouts
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind, Problem


@dataclass
class ScriptedEngine:
    """Replays, per trajectory, a list of model turns; stops like a real engine at the first stop string."""

    tokenizer: object
    turns: dict[str, list[str]]
    eos_token_ids: set[int] = field(default_factory=set)
    requests: list[GenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.eos_token_ids = {self.tokenizer.eos_token_id}
        self._pos: dict[str, int] = {}

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        outs = []
        for r in requests:
            self.requests.append(r)
            i = self._pos.get(r.request_id, 0)
            self._pos[r.request_id] = i + 1
            text = self.turns[r.request_id][i]
            eos = text.endswith("<EOS>")
            text = text.removesuffix("<EOS>")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            # cut at the first stop string, the way engines do (token granularity)
            for k in range(1, len(ids) + 1):
                piece = self.tokenizer.decode(ids[:k])
                hit = next((s for s in r.stop if s in piece), None)
                if hit:
                    outs.append(GenOutput(ids[:k], "stop", hit))
                    break
            else:
                if len(ids) >= r.max_new_tokens:
                    outs.append(GenOutput(ids[: r.max_new_tokens], "length"))
                elif eos:
                    outs.append(GenOutput(ids + [self.tokenizer.eos_token_id], "eos"))
                else:
                    outs.append(GenOutput(ids, "length"))
        return outs

    def close(self) -> None:
        pass


class RecordingSandbox:
    """Runs nothing: returns canned results and records calls (thread-safe)."""

    def __init__(self, result_for=None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.closed: list[str] = []
        self._lock = threading.Lock()
        self.result_for = result_for or (lambda code: ExecResult(kind=ExecKind.OK, stdout="391\n", duration_s=0.01))

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        with self._lock:
            self.calls.append((code, session))
        return self.result_for(code)

    def close_session(self, session: str) -> None:
        self.closed.append(session)

    def close(self) -> None:
        pass


P = Problem("p1", "What is 17*23?", "391")


def _run(tokenizer, turns, overrides=(), sandbox=None, n=1):
    cfg = load_config(None, ["rollout.max_new_tokens=400", *overrides])
    engine = ScriptedEngine(tokenizer, {f"p1#{i}": turns for i in range(n)})
    sandbox = sandbox or RecordingSandbox()
    trajs = run_rollouts([P], engine=BatchedSteps(engine), sandbox=sandbox, cfg=cfg, sampling=SamplingSpec(0.0), n=n)
    return trajs, engine, sandbox


def _check_alignment(traj, tokenizer) -> None:
    assert len(traj.loss_mask) == len(traj.response_ids)
    assert [t for s in traj.segments for t in s.token_ids] == traj.response_ids
    for seg in traj.segments:
        assert all(traj.loss_mask[i] == (1 if seg.kind == "model" else 0) for i in range(
            sum(len(s.token_ids) for s in traj.segments[: traj.segments.index(seg)]),
            sum(len(s.token_ids) for s in traj.segments[: traj.segments.index(seg) + 1]),
        ))


def test_one_call_then_answer_masks_exactly_the_observation(tokenizer) -> None:
    turns = ["Let me compute.\n```python\nprint(17*23)\n```\nignored", "The answer is \\boxed{391}.<EOS>"]
    (traj,), engine, sandbox = _run(tokenizer, turns)
    assert sandbox.calls == [("print(17*23)", "p1#0")]
    assert [s.kind for s in traj.segments] == ["model", "observation", "model"]
    obs = traj.segments[1]
    assert obs.text == "```output\n391\n```\n"
    assert obs.token_ids == tokenizer(obs.text, add_special_tokens=False)["input_ids"]
    _check_alignment(traj, tokenizer)
    assert traj.num_observation_tokens == len(obs.token_ids)
    assert traj.finish_reason == "eos" and traj.response_ids[-1] == tokenizer.eos_token_id
    assert traj.calls[0].kind == ExecKind.OK and traj.calls[0].observation == obs.text
    # the continuation request is exactly prompt + everything so far (token-in / token-out, no re-tokenization)
    second = engine.requests[1]
    assert second.prompt_ids == traj.prompt_ids + traj.response_ids[: len(second.prompt_ids) - len(traj.prompt_ids)]


@pytest.mark.parametrize("max_calls", [0, 1, 2])
def test_max_calls_respected(tokenizer, max_calls: int) -> None:
    block = "```python\nprint(1)\n```\n"
    turns = [block, block, block, "done \\boxed{1}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns, [f"tool.max_calls={max_calls}"])
    assert len(sandbox.calls) == max_calls == traj.num_calls
    # after the limit, code blocks remain plain model text
    assert traj.response_text.count("```python") >= max_calls
    _check_alignment(traj, tokenizer)


def test_notify_after_limit_tells_model(tokenizer) -> None:
    turns = ["```python\nprint(1)\n```\n", "ok \\boxed{1}<EOS>"]
    (traj,), _, _ = _run(tokenizer, turns, ["tool.after_limit=notify"])
    assert "No more code executions" in traj.segments[1].text
    assert traj.loss_mask.count(0) == len(traj.segments[1].token_ids)


def test_eos_right_after_code_block_runs_the_block(tokenizer) -> None:
    turns = ["```python\nprint(17*23)\n```<EOS>", "So \\boxed{391}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns)
    assert len(sandbox.calls) == 1
    assert traj.response_ids.count(tokenizer.eos_token_id) == 1  # the dropped EOS is not in the response


def test_stop_at_non_code_fence_keeps_generating(tokenizer) -> None:
    turns = ["Table:\n```text\na b\n```\n", "more text \\boxed{2}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns)
    assert sandbox.calls == [] and traj.segments[0].kind == "model" and len(traj.segments) == 1
    assert "more text" in traj.response_text


def test_token_budget_ends_with_length(tokenizer) -> None:
    turns = ["word " * 500]
    (traj,), _, _ = _run(tokenizer, turns, ["rollout.max_new_tokens=50"])
    assert traj.finish_reason == "length" and len(traj.response_ids) == 50


def test_observation_larger_than_budget_is_cut_and_masked(tokenizer) -> None:
    big = lambda code: ExecResult(kind=ExecKind.OK, stdout="9" * 5000)
    turns = ["```python\nprint(9)\n```\n", "never"]
    (traj,), _, _ = _run(tokenizer, turns, ["rollout.max_new_tokens=40", "tool.max_output_chars=4000"], RecordingSandbox(big))
    assert traj.finish_reason == "length" and len(traj.response_ids) == 40
    _check_alignment(traj, tokenizer)


def test_retool_format_answer_stop(tokenizer) -> None:
    turns = ["<code>\n```python\nprint(17*23)\n```\n</code>", "<answer>\\boxed{391}</answer> trailing"]
    (traj,), _, sandbox = _run(tokenizer, turns, ["tool.format=retool"])
    assert sandbox.calls[0][0] == "print(17*23)"
    assert traj.segments[1].text.startswith("\n<interpreter>\n391")
    assert traj.finish_reason == "answer" and "trailing" not in traj.response_text


def test_infra_failure_is_recorded_not_raised(tokenizer) -> None:
    class Broken(RecordingSandbox):
        def run(self, code, *, timeout_s, session=None):
            raise ConnectionError("sandbox host unreachable")

    turns = ["```python\nprint(1)\n```\n", "x<EOS>"]
    (traj,), _, _ = _run(tokenizer, turns, sandbox=Broken())
    assert traj.infra_failed and traj.calls[0].kind == ExecKind.INFRA
    assert traj.finish_reason == "infra_error" and not traj.code_failed


def test_model_error_is_code_failure(tokenizer) -> None:
    err = lambda code: ExecResult(kind=ExecKind.ERROR, error_name="NameError", error_line="NameError: name 'x' is not defined")
    turns = ["```python\nprint(x)\n```\n", "hmm \\boxed{0}<EOS>"]
    (traj,), _, _ = _run(tokenizer, turns, sandbox=RecordingSandbox(err))
    assert traj.code_failed and not traj.infra_failed
    assert "NameError: name 'x' is not defined" in traj.segments[1].text


def test_n_samples_ordered_and_sessions_closed(tokenizer) -> None:
    turns = ["```python\nprint(1)\n```\n", "\\boxed{1}<EOS>"]
    trajs, _, sandbox = _run(tokenizer, turns, n=3)
    assert [t.sample_index for t in trajs] == [0, 1, 2]
    assert sorted(s for _, s in sandbox.calls) == ["p1#0", "p1#1", "p1#2"]
    assert sorted(sandbox.closed) == ["p1#0", "p1#1", "p1#2"]


def test_trajectory_round_trips_through_dict(tokenizer) -> None:
    from toolrl.types import Trajectory

    turns = ["```python\nprint(17*23)\n```\n", "\\boxed{391}<EOS>"]
    (traj,), _, _ = _run(tokenizer, turns)
    again = Trajectory.from_dict(traj.to_dict())
    assert again == traj


def test_output_fence_trigger_runs_only_at_the_models_output_opener(tokenizer) -> None:
    """ToRL's code: a closing fence alone runs nothing; the model's own "```output" runs the latest python block."""
    turns = ["First:\n```python\nprint(2)\n```\nthen\n```python\nprint(17*23)\n```\nwhich prints\n```output",
             "The answer is \\boxed{391}.<EOS>"]
    (traj,), engine, sandbox = _run(tokenizer, turns, ["tool.trigger=output_fence"])
    assert sandbox.calls == [("print(17*23)", "p1#0")]
    assert engine.requests[0].stop == ["```output"]  # no closing-fence stop string
    assert traj.segments[1].kind == "observation" and traj.segments[1].text == "\n391\n```\n"
    _check_alignment(traj, tokenizer)


def test_output_fence_trigger_ignores_closed_blocks_and_eos(tokenizer) -> None:
    turns = ["```python\nprint(1)\n```\nso \\boxed{1}<EOS>"]
    (traj,), _, sandbox = _run(tokenizer, turns, ["tool.trigger=output_fence"])
    assert sandbox.calls == [] and traj.finish_reason == "eos"
    # EOS right after a closed block: with output_fence that ends the response (close_fence would run the block)
    (traj,), _, sandbox = _run(tokenizer, ["```python\nprint(1)\n```<EOS>"], ["tool.trigger=output_fence"])
    assert sandbox.calls == [] and traj.finish_reason == "eos"


def test_close_fence_stays_the_default(tokenizer) -> None:
    (traj,), engine, sandbox = _run(tokenizer, ["```python\nprint(1)\n```\n", "\\boxed{1}<EOS>"])
    assert load_config(None, []).tool.trigger == "close_fence"
    assert len(sandbox.calls) == 1 and "```\n" in engine.requests[0].stop


def test_unlimited_calls_run_until_the_answer(tokenizer) -> None:
    block = "<code>\n```python\nprint(1)\n```\n</code>"
    turns = [block] * 12 + ["<answer>\\boxed{1}</answer>"]
    (traj,), _, sandbox = _run(tokenizer, turns, ["tool.format=retool", "tool.max_calls=-1",
                                                  "rollout.max_new_tokens=2000"])
    assert len(sandbox.calls) == 12 == traj.num_calls and traj.finish_reason == "answer"
    _check_alignment(traj, tokenizer)
