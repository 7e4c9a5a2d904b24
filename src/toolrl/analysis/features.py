"""Per-response numbers of the behaviour analyses, read off one Trajectory (pure: no IO, no model).

Definitions (docs/analysis.md repeats them for readers):
- written blocks = executed calls + ``Trajectory.unexecuted_blocks`` (closed code blocks that did not run);
  ``None`` when the trajectory predates that field, so "written" cannot be known;
- a call passes when its kind is ``ok``; infrastructure failures are not the model's and are left out;
- code lines = non-empty lines that are not ``#`` comments, over every written block;
- invocation timing = token position where the first executed block starts / response length in tokens;
- self-correction = a failed call (error, timeout, resource limit) later followed by a passing one;
- before the answer = written blocks that start before the final answer (the last ``\\boxed{`` in torl, the
  first ``<answer>`` in retool); ``None`` when the response has no final answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from toolrl.analysis.purpose import classify_code
from toolrl.rollout.formats import ToolFormat, code_block_spans
from toolrl.types import ExecKind, Segment, Trajectory

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class TrajStats:
    index: int  # line of the trajectory in its rollouts file (what `toolrl inspect rollout --index` takes)
    problem_id: str
    sample_index: int
    correct: bool | None
    length: int  # response tokens (model + observation)
    executed: int  # code blocks sent to the sandbox (calls)
    unexecuted: int | None  # closed blocks that did not run; None = not recorded (older rollouts)
    hit_limit: bool | None  # used all C calls; None when C is unknown
    before_answer: int | None  # written blocks starting before the final answer; None = no final answer
    call_ok: tuple[bool, ...]  # per call that was not an infrastructure failure: passed?
    code_lines: int  # non-empty, non-comment lines over every written block
    first_call_pos: float | None  # relative token position of the first call's start; None without calls
    self_corrected: bool
    purposes: tuple[str, ...]  # one label per written block

    @property
    def written(self) -> int | None:
        return None if self.unexecuted is None else self.executed + self.unexecuted


def code_lines(code: str) -> int:
    """Non-empty lines that are not comments.

    >>> code_lines("x = 1\\n\\n# a comment\\n   # indented comment\\nprint(x)  # trailing comment counts\\n")
    2
    """
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def self_corrected(kinds: list[ExecKind]) -> bool:
    """A model failure followed, at any later call, by a passing call (infrastructure failures ignored).

    >>> self_corrected([ExecKind.ERROR, ExecKind.INFRA, ExecKind.OK])
    True
    >>> self_corrected([ExecKind.OK, ExecKind.ERROR])
    False
    """
    failed = False
    for k in kinds:
        if k.is_model_failure:
            failed = True
        elif k == ExecKind.OK and failed:
            return True
    return False


def token_index(seg: Segment, char_offset: int, decode: Decode | None = None) -> int:
    """Index (within ``seg``) of the token holding character ``char_offset`` of ``seg.text``.

    With the run's tokenizer (``decode``) the answer is exact; without it the offset is interpolated linearly
    over the segment, which is exact when tokens are equally long and within a few tokens otherwise.
    """
    n = len(seg.token_ids)
    if n == 0 or not seg.text:
        return 0
    if decode is None:
        return min(n - 1, int(char_offset * n / len(seg.text)))
    lo, hi = 1, n  # smallest k whose decoded prefix extends past the offset
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(seg.token_ids[:mid])) > char_offset:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


def first_call_position(traj: Trajectory, fmt: ToolFormat, decode: Decode | None = None) -> float | None:
    """Token position where the first executed block starts, divided by the response length."""
    total = len(traj.response_ids)
    if not traj.calls or total == 0:
        return None
    start = 0
    for i, seg in enumerate(traj.segments):
        if seg.kind == "model" and i + 1 < len(traj.segments) and traj.segments[i + 1].kind == "observation":
            spans = code_block_spans(seg.text, fmt)
            # the executed block is the last one before the observation; without one, count the call's end
            pos = start + (token_index(seg, spans[-1][0], decode) if spans else len(seg.token_ids))
            return pos / total
        start += len(seg.token_ids)
    return None


def answer_offset(text: str, fmt: ToolFormat) -> int | None:
    """Character offset of the final answer in the model's text, or None when there is none."""
    pos = text.rfind("\\boxed") if fmt.name == "torl" else text.find("<answer>")
    return None if pos < 0 else pos


def blocks_before_answer(traj: Trajectory, fmt: ToolFormat) -> int | None:
    """Written code blocks that start before the final answer (observations are not searched for answers)."""
    text, offsets = "", []
    for seg in traj.segments:
        offsets.append(len(text))
        text += seg.text if seg.kind == "model" else " " * len(seg.text)  # keep offsets, hide tool output
    ans = answer_offset(text, fmt)
    if ans is None:
        return None
    starts = [off + s for seg, off in zip(traj.segments, offsets) if seg.kind == "model"
              for s, _, _ in code_block_spans(seg.text, fmt)]
    return sum(1 for s in starts if s < ans)


def traj_stats(traj: Trajectory, fmt: ToolFormat, *, index: int = 0, max_calls: int | None = None,
               decode: Decode | None = None) -> TrajStats:
    unexec = traj.unexecuted_blocks
    written_code = [c.code for c in traj.calls] + list(unexec or [])
    kinds = [c.kind for c in traj.calls]
    return TrajStats(
        index=index,
        problem_id=traj.problem.id,
        sample_index=traj.sample_index,
        correct=traj.correct,
        length=len(traj.response_ids),
        executed=len(traj.calls),
        unexecuted=None if unexec is None else len(unexec),
        hit_limit=None if max_calls is None else len(traj.calls) >= max_calls,
        before_answer=blocks_before_answer(traj, fmt),
        call_ok=tuple(k == ExecKind.OK for k in kinds if k != ExecKind.INFRA),
        code_lines=sum(code_lines(c) for c in written_code),
        first_call_pos=first_call_position(traj, fmt, decode),
        self_corrected=self_corrected(kinds),
        purposes=tuple(classify_code(c) for c in written_code),
    )
