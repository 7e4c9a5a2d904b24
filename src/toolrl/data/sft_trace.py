"""Code-integrated traces written by a teacher (pure): parse, execute in order, verify.

A teacher rewrites a text solution into prose with code blocks, and usually also writes what it *expects* each
block to print. That claimed output is never kept: every block runs in the sandbox, in order, and the real
observation, rendered exactly as a rollout with the same tool config inserts it, takes its place. Then the trace
is verified by format and by answer. Drop reasons are stable strings (the build report counts them).

The sandbox is passed in as a ``run(code) -> ExecResult`` callable, so this module does no I/O itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from toolrl.config.schema import ToolConfig
from toolrl.reward.extract import extract_answer
from toolrl.rollout.formats import extract_call, format_observation, get_format
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind

# Reasons a row is dropped for good (the row is marked done).
MALFORMED = "malformed_tags"
NO_CODE = "no_code"
NO_ANSWER = "no_answer"
WRONG = "wrong_answer"
CODE_ERROR = "code_error"
# Reasons a row is left for the next run (infrastructure, not the data).
TEACHER_ERROR = "teacher_error"
SANDBOX_ERROR = "sandbox_error"
RETRYABLE = frozenset({TEACHER_ERROR, SANDBOX_ERROR})

_BLOCKS = {
    # code block, then the teacher's claimed output block (which must directly follow a code block)
    "retool": (re.compile(r"<code>.*?</code>", re.DOTALL), re.compile(r"<interpreter>.*?</interpreter>\n?", re.DOTALL)),
    "torl": (re.compile(r"```(?:python|py)[ \t]*\n.*?```[ \t]*\n?", re.DOTALL), re.compile(r"```output[ \t]*\n.*?```[ \t]*\n?", re.DOTALL)),
}
_TAGS = {"retool": ("code", "interpreter", "answer"), "torl": ()}


@dataclass
class Piece:
    kind: str  # "text" | "code"
    text: str


@dataclass
class Trace:
    text: str  # the assistant message with real observations
    results: list[ExecResult] = field(default_factory=list)
    claimed_replaced: int = 0  # teacher-written output blocks that were replaced


def tags_balanced(text: str, fmt: str) -> str | None:
    """None when tags open and close in order without nesting; else what is wrong.

    >>> tags_balanced("<code>a</code><interpreter>1</interpreter><answer>x</answer>", "retool") is None
    True
    >>> tags_balanced("<code>a<code>b</code>", "retool"), tags_balanced("```python\\nx\\n", "torl")
    ('<code> opened inside <code>', 'unclosed ``` fence')
    """
    if fmt == "torl":
        return None if text.count("```") % 2 == 0 else "unclosed ``` fence"
    for tag in _TAGS[fmt]:
        depth = 0
        for m in re.finditer(rf"</?{tag}>", text):
            if m.group(0).startswith("</"):
                depth -= 1
                if depth < 0:
                    return f"</{tag}> without <{tag}>"
            else:
                depth += 1
                if depth > 1:
                    return f"<{tag}> opened inside <{tag}>"
        if depth:
            return f"<{tag}> not closed"
    return None


def split_teacher_text(text: str, fmt: str) -> tuple[list[Piece], int] | str:
    """Prose and code pieces with the teacher's claimed outputs removed, and how many were removed; or a
    ``malformed_tags`` detail when the tags are unbalanced or an output block follows no code block.

    >>> split_teacher_text("A\\n<code>print(1)</code>\\n<interpreter>9</interpreter>\\nB", "retool")
    ([Piece(kind='text', text='A\\n'), Piece(kind='code', text='<code>print(1)</code>'), Piece(kind='text', text='B')], 1)
    >>> split_teacher_text("<interpreter>9</interpreter>", "retool")
    'an output block follows no code block'
    """
    problem = tags_balanced(text, fmt)
    if problem:
        return problem
    code_re, out_re = _BLOCKS[fmt]
    pieces: list[Piece] = []
    removed = 0
    pos = 0
    after_code = False
    while pos < len(text):
        c = code_re.search(text, pos)
        o = out_re.search(text, pos)
        if o and (not c or o.start() < c.start()):  # an output block comes first
            if not (after_code and not text[pos:o.start()].strip()):
                return "an output block follows no code block"
            removed += 1
            pos = o.end()
            after_code = False
            continue
        if not c:
            pieces.append(Piece("text", text[pos:]))
            break
        if c.start() > pos:
            pieces.append(Piece("text", text[pos:c.start()]))
        pieces.append(Piece("code", text[c.start():c.end()]))
        pos = c.end()
        after_code = True
    return [p for p in pieces if p.text], removed


def code_of(block: str, fmt: str) -> str | None:
    """The Python source inside one code block (``<code>`` with or without an inner fence, or a fence)."""
    return extract_call(block.rstrip(), get_format(fmt))


def execute_trace(pieces: list[Piece], tool: ToolConfig, run: Callable[[str], ExecResult]) -> Trace:
    """Run every code block in order and put its real observation right after it."""
    out = ""
    results: list[ExecResult] = []
    for piece in pieces:
        if piece.kind == "text":
            out += piece.text.lstrip("\n") if out.endswith("\n") else piece.text
            continue
        block = piece.text.rstrip() if tool.format == "retool" else piece.text
        if tool.format == "torl" and not block.endswith("\n"):
            block += "\n"
        out += block
        code = code_of(block, tool.format)
        result = run(code) if code else ExecResult(kind=ExecKind.ERROR, stderr="empty code block",
                                                  error_line="SyntaxError: empty code block")
        results.append(result)
        out += format_observation(result, tool, turn_text=out)
    return Trace(text=out, results=results)


def check_structure(text: str, fmt: str) -> str | None:
    """None when every code block is directly followed by its output block and a final answer ends the trace."""
    problem = tags_balanced(text, fmt)
    if problem:
        return MALFORMED
    code_re, out_re = _BLOCKS[fmt]
    blocks = list(code_re.finditer(text))
    if not blocks:
        return NO_CODE
    for m in blocks:
        follow = out_re.match(text, m.end() + (len(text[m.end():]) - len(text[m.end():].lstrip())))
        if not follow:
            return MALFORMED
    tail = text[blocks[-1].end():]
    if extract_answer(out_re.sub(" ", tail), fmt) is None:
        return NO_ANSWER
    return None


@dataclass
class Verdict:
    reason: str | None  # None = kept
    detail: str = ""
    trace: Trace | None = None


def build_trace(teacher_text: str, tool: ToolConfig, run: Callable[[str], ExecResult],
                grade: Callable[[str], bool], require_success: bool = False) -> Verdict:
    """The whole per-row pipeline: split, execute, verify structure, then the answer (``grade``)."""
    split = split_teacher_text(teacher_text, tool.format)
    if isinstance(split, str):
        return Verdict(MALFORMED, split)
    pieces, removed = split
    if not any(p.kind == "code" for p in pieces):
        return Verdict(NO_CODE, "the rewrite holds no code block")
    trace = execute_trace(pieces, tool, run)
    trace.claimed_replaced = removed
    if any(r.kind == ExecKind.INFRA for r in trace.results):
        return Verdict(SANDBOX_ERROR, "the sandbox failed to run a block", trace)
    if require_success and any(r.kind != ExecKind.OK for r in trace.results):
        bad = next(r for r in trace.results if r.kind != ExecKind.OK)
        return Verdict(CODE_ERROR, bad.error_line or bad.kind.value, trace)
    structure = check_structure(trace.text, tool.format)
    if structure:
        return Verdict(structure, "no final \\boxed{} answer after the last code block" if structure == NO_ANSWER else "", trace)
    if not grade(trace.text):
        return Verdict(WRONG, f"final answer {extract_answer(trace.text, tool.format)!r}", trace)
    return Verdict(None, "", trace)
