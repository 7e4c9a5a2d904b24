"""The per-trajectory state machine shared by every scheduler (batched hf loop, asynchronous vLLM runner).

    GENERATING --(stop at a closed code block, calls left)--> EXECUTING --(observation appended)--> GENERATING
    GENERATING --(eos / answer / token budget / deadline)--> DONE

Schedulers only move tokens: they ask ``next_request()``, hand the engine's output to ``on_generated()``, run the
returned code in the sandbox and hand the result to ``on_executed()``. All decisions live here, so every backend
produces trajectories with the same structure, masks and call records.

Documented choices:
- After C calls, generation continues without pausing at code blocks: later code blocks stay plain model text
  and are not executed (``tool.after_limit=continue``, ToRL's behaviour); ``finish`` records their code in
  ``Trajectory.unexecuted_blocks``. With ``tool.after_limit=notify`` the
  last observation also tells the model that no more executions are available (masked like all observations).
- A response that ends (EOS) right after closing a code block, with calls left, has that block executed: the EOS
  token is dropped and generation continues after the observation, as if the block's closing fence had been a stop
  string. Small instruct models often stop there, expecting a tool to answer. This applies to
  ``tool.trigger=close_fence`` only: with ``output_fence`` (ToRL's code) an EOS ends the response.
- ``tool.max_calls=-1`` means no cap: code runs at every call until the answer or the token budget ends the
  response (ReTool).
"""

from __future__ import annotations

import time
from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.rollout.engine import GenOutput, GenRequest
from toolrl.rollout.formats import ToolFormat, code_blocks, extract_call, format_observation, get_format
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind, FinishReason, ToolCall, Trajectory

UNLIMITED_CALLS = 1 << 62  # tool.max_calls=-1: far more calls than any token budget allows


LIMIT_NOTICE = "(No more code executions are available. Finish with your final answer.)\n"


class TrajectoryState:
    def __init__(self, traj: Trajectory, cfg: RootConfig, tokenizer: Any, eos_token_ids: set[int]) -> None:
        self.traj = traj
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.fmt: ToolFormat = get_format(cfg.tool.format, cfg.tool.trigger)
        self.calls_left = UNLIMITED_CALLS if cfg.tool.max_calls < 0 else cfg.tool.max_calls
        self.done = False
        self.started = time.monotonic()
        self._turn_ids: list[int] = []  # model tokens since the last observation (decoded together: exact text)
        self._pending_code: str | None = None
        self.engine_error: str | None = None

    @property
    def session_id(self) -> str:
        return f"{self.traj.problem.id}#{self.traj.sample_index}"

    @property
    def remaining_tokens(self) -> int:
        return self.cfg.rollout.max_new_tokens - len(self.traj.response_ids)

    def deadline_passed(self) -> bool:
        return time.monotonic() - self.started > self.cfg.rollout.trajectory_timeout_s

    def next_request(self) -> GenRequest | None:
        if self.done:
            return None
        if self.deadline_passed():
            self.finish("timeout")
            return None
        if self.remaining_tokens <= 0:
            self.finish("length")
            return None
        return GenRequest(
            prompt_ids=self.traj.prompt_ids + self.traj.response_ids,
            max_new_tokens=self.remaining_tokens,
            stop=self.fmt.stops(self.calls_left),
            request_id=self.session_id,
        )

    def _turn_text(self) -> str:
        return self.tokenizer.decode(self._turn_ids, skip_special_tokens=False)

    def on_generated(self, out: GenOutput, gen_time_s: float = 0.0) -> str | None:
        """Append the model's tokens; return the code to execute next, or None (then check ``done``)."""
        self.traj.gen_time_s += gen_time_s
        if out.error:  # the engine failed, not the model: stop here; training drops it (traj.infra_failed)
            self.engine_error = out.error
            self.finish("infra_error")
            return None
        ids = list(out.token_ids)
        logprobs = list(out.logprobs) if out.logprobs is not None else None
        if self.traj.logprobs is None and logprobs is not None and not self.traj.response_ids:
            self.traj.logprobs = []
        finish = out.finish
        if (finish == "eos" and self.calls_left > 0 and self.fmt.trigger == "close_fence" and ids
                and ids[-1] in self.eos_token_ids):
            # EOS right after a closed code block: run the block (see module docstring).
            body = self.tokenizer.decode(self._turn_ids + ids[:-1], skip_special_tokens=False)
            if extract_call(body, self.fmt) is not None:
                ids = ids[:-1]
                logprobs = logprobs[:-1] if logprobs is not None else None
                finish = "stop"
        self._turn_ids.extend(ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        self.traj.append("model", text, ids, logprobs)
        if finish == "eos":
            self.finish("eos")
            return None
        if finish == "length" or self.remaining_tokens <= 0:
            self.finish("length")
            return None
        turn_text = self._turn_text()
        if self.fmt.final_stops and turn_text.rstrip().endswith(self.fmt.final_stops):
            self.finish("answer")
            return None
        if self.calls_left <= 0:  # only final stop strings are active after the limit; nothing to execute
            self.finish("eos")
            return None
        code = extract_call(turn_text, self.fmt)
        if code is None:
            return None  # stopped at a fence that closes no code block: keep generating
        self._pending_code = code
        return code

    def on_executed(self, result: ExecResult) -> None:
        """Append the observation for the pending call (masked out of the loss)."""
        code = self._pending_code
        if code is None:
            raise RuntimeError("on_executed called without a pending code call")
        self._pending_code = None
        self.traj.sandbox_time_s += result.duration_s
        obs = format_observation(result, self.cfg.tool, turn_text=self._turn_text())
        self.calls_left -= 1
        if self.calls_left == 0 and self.cfg.tool.after_limit == "notify":
            obs += LIMIT_NOTICE
        obs_ids = list(self.tokenizer(obs, add_special_tokens=False)["input_ids"])
        self.traj.calls.append(
            ToolCall(
                code=code,
                kind=result.kind,
                observation=obs,
                stdout=result.stdout,
                stderr=result.stderr,
                error_name=result.error_name,
                duration_s=result.duration_s,
                attempts=result.attempts,
            )
        )
        self._turn_ids = []
        budget = self.remaining_tokens
        if len(obs_ids) >= budget:  # the observation alone exhausts the budget: keep what fits, then stop
            obs_ids = obs_ids[: max(budget, 0)]
            obs = self.tokenizer.decode(obs_ids, skip_special_tokens=False)
            self.traj.append("observation", obs, obs_ids)
            self.finish("length")
            return
        self.traj.append("observation", obs, obs_ids)
        if result.kind == ExecKind.INFRA:
            # The sandbox failed, not the model: stop here; training drops the trajectory (traj.infra_failed).
            self.finish("infra_error")
            return

    def finish(self, reason: FinishReason) -> None:
        if not self.done:
            self.done = True
            self.traj.finish_reason = reason
            self.traj.unexecuted_blocks = self._unexecuted_blocks()

    def _unexecuted_blocks(self) -> list[str]:
        """Closed code blocks that did not run: a model segment followed by an observation ran its last block only."""
        segs = self.traj.segments
        out: list[str] = []
        for i, seg in enumerate(segs):
            if seg.kind != "model":
                continue
            blocks = code_blocks(seg.text, self.fmt)
            out += blocks[:-1] if i + 1 < len(segs) and segs[i + 1].kind == "observation" else blocks
        return out
