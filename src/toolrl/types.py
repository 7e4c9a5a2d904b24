"""Core data records shared by rollout, reward, training and evaluation.

Conventions (everything downstream relies on them):
- token ids are the single source of truth; text fields are decodes kept for people and for parsing.
- ``Trajectory.response_ids`` holds every token after the prompt: model tokens and observation tokens interleaved.
- ``Trajectory.loss_mask`` is aligned with ``response_ids``: 1 = token the model generated (trained on),
  0 = token the tool/sandbox inserted (never trained on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal


class ExecKind(str, Enum):
    """What happened when one piece of model-written code ran."""

    OK = "ok"  # ran to completion without an exception
    ERROR = "error"  # the model's code raised (SyntaxError, NameError, ...): the model's mistake
    TIMEOUT = "timeout"  # wall-clock or CPU limit hit: the model's code was too slow
    RESOURCE = "resource_limit"  # memory, process or file-size limit hit: the model's code was too greedy
    INFRA = "infra_error"  # the sandbox itself failed (could not start, crashed, lost): NOT the model's mistake

    @property
    def is_model_failure(self) -> bool:
        return self in (ExecKind.ERROR, ExecKind.TIMEOUT, ExecKind.RESOURCE)


@dataclass
class Problem:
    """One task: a question and its ground-truth final answer."""

    id: str
    problem: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolCall:
    """One execution of model-written code inside a trajectory."""

    code: str
    kind: ExecKind
    observation: str  # exactly the text inserted into the context (already formatted and truncated)
    stdout: str = ""
    stderr: str = ""
    error_name: str | None = None  # e.g. "ZeroDivisionError" when kind == ERROR
    duration_s: float = 0.0
    attempts: int = 1  # >1 when infrastructure failures were retried


SegmentKind = Literal["model", "observation"]


@dataclass
class Segment:
    """A contiguous run of response tokens from one source."""

    kind: SegmentKind
    text: str
    token_ids: list[int]


FinishReason = Literal["answer", "eos", "length", "max_calls", "timeout", "infra_error", "error"]


@dataclass
class Trajectory:
    """One sampled response to one problem, with every tool call it made."""

    problem: Problem
    sample_index: int  # which of the n samples for this problem
    prompt_text: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)  # (len(response_ids),) 1 model token, 0 observation
    logprobs: list[float] | None = None  # (len(response_ids),) sampling logprobs where the engine gave them
    segments: list[Segment] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "eos"
    gen_time_s: float = 0.0
    sandbox_time_s: float = 0.0
    # Code of closed code blocks the model wrote that did not run (after C calls, with tool.after_limit=continue,
    # later blocks stay plain text). None = not recorded (rollouts written before this field existed).
    unexecuted_blocks: list[str] | None = None
    # Filled by toolrl.reward:
    reward: float | None = None
    correct: bool | None = None
    extracted_answer: str | None = None

    @property
    def response_text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    @property
    def has_code(self) -> bool:
        return bool(self.calls)

    @property
    def infra_failed(self) -> bool:
        """True when any call, or the generation engine, failed for infrastructure reasons: training drops such
        trajectories."""
        return self.finish_reason == "infra_error" or any(c.kind == ExecKind.INFRA for c in self.calls)

    @property
    def code_failed(self) -> bool:
        """True when any call failed through the model's own code (error, timeout, resource limit)."""
        return any(c.kind.is_model_failure for c in self.calls)

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def num_observation_tokens(self) -> int:
        return len(self.loss_mask) - sum(self.loss_mask)

    def append(self, kind: SegmentKind, text: str, token_ids: list[int], logprobs: list[float] | None = None) -> None:
        """Append tokens to the response, keeping mask, segments and logprobs aligned."""
        if not token_ids:
            return
        self.response_ids.extend(token_ids)
        self.loss_mask.extend([1 if kind == "model" else 0] * len(token_ids))
        if self.logprobs is not None:  # engines that report logprobs start the list; observations get 0.0
            self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(token_ids))
        if self.segments and self.segments[-1].kind == kind:
            last = self.segments[-1]
            self.segments[-1] = Segment(kind, last.text + text, last.token_ids + list(token_ids))
        else:
            self.segments.append(Segment(kind, text, list(token_ids)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for c in d["calls"]:
            c["kind"] = c["kind"].value if isinstance(c["kind"], ExecKind) else c["kind"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        d = dict(d)
        d["problem"] = Problem(**d["problem"])
        d["segments"] = [Segment(**s) for s in d.get("segments", [])]
        d["calls"] = [ToolCall(**{**c, "kind": ExecKind(c["kind"])}) for c in d.get("calls", [])]
        return cls(**d)
