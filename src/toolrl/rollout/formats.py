"""Tool formats, as pure text logic: where generation pauses, which code runs, how its output is shown.

Two formats, one per paper:
- ``torl``: the model writes a fenced ```python block; the observation is inserted as an ```output block. With
  ``tool.trigger=close_fence`` generation pauses when the block closes (or when the model itself opens an ```output
  block); with ``tool.trigger=output_fence`` (ToRL's released code) only the model's own "```output" runs code:
  the latest complete ```python block before it.
- ``retool``: the model writes ``<code>`` ... ``</code>`` (usually around a ```python block); generation pauses at
  ``</code>``; the observation is inserted as ``<interpreter>`` ... ``</interpreter>``; the final answer goes in
  ``<answer>`` ... ``</answer>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind

if TYPE_CHECKING:
    from toolrl.config.schema import ToolConfig

_PY_BLOCK = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL)
_CODE_TAG = re.compile(r"<code>(.*?)</code>", re.DOTALL)
_INNER_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*[ \t]*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class ToolFormat:
    name: str
    call_stops: tuple[str, ...]  # stop strings that may end a code call
    final_stops: tuple[str, ...]  # stop strings that end the response (kept after the call limit)
    trigger: str = "close_fence"  # torl: close_fence (a closing fence runs the block) or output_fence

    def stops(self, calls_left: int) -> list[str]:
        return list(self.call_stops + self.final_stops) if calls_left > 0 else list(self.final_stops)


TORL = ToolFormat("torl", call_stops=("```output", "```\n"), final_stops=())
TORL_OUTPUT = ToolFormat("torl", call_stops=("```output",), final_stops=(), trigger="output_fence")
RETOOL = ToolFormat("retool", call_stops=("</code>",), final_stops=("</answer>",))
FORMATS = {"torl": TORL, "retool": RETOOL}


def get_format(name: str, trigger: str = "close_fence") -> ToolFormat:
    """The format ``name``; ``trigger`` only matters for torl (retool always runs at ``</code>``)."""
    if name == "torl" and trigger == "output_fence":
        return TORL_OUTPUT
    return FORMATS[name]


def extract_call(turn_text: str, fmt: ToolFormat) -> str | None:
    """The code to execute when generation stopped at the end of ``turn_text``, or None if no call is due.

    ``turn_text`` is the model's text since the last observation. A call is due only when a code block closes at
    the very end (trailing whitespace or an ``output`` opener aside): a closing fence of some other block, or an
    opening fence, is not a call.

    >>> extract_call("Let me compute.\\n```python\\nprint(17*23)\\n```\\n", TORL)
    'print(17*23)'
    >>> extract_call("```text\\nhello\\n```\\n", TORL) is None
    True
    >>> extract_call("<code>\\n```python\\nx = 2\\nprint(x)\\n```\\n</code>", RETOOL)
    'x = 2\\nprint(x)'

    With the output_fence trigger only the model's own "```output" makes a call, and the latest complete
    ```python block before it runs, wherever it ends:

    >>> extract_call("```python\\nprint(1)\\n```\\n", TORL_OUTPUT) is None
    True
    >>> extract_call("```python\\nprint(1)\\n```\\nSo we get:\\n```output", TORL_OUTPUT)
    'print(1)'
    """
    if fmt.trigger == "output_fence":
        tail = turn_text.rstrip()
        if not tail.endswith("```output"):
            return None
        blocks = list(_PY_BLOCK.finditer(tail[: -len("```output")]))
        if not blocks:
            return None
        code = blocks[-1].group(1)
    elif fmt.name == "torl":
        tail = turn_text.rstrip()
        if tail.endswith("```output"):
            tail = tail[: -len("```output")].rstrip()
        blocks = list(_PY_BLOCK.finditer(tail))
        if not blocks or blocks[-1].end() != len(tail):
            return None
        code = blocks[-1].group(1)
    else:
        tail = turn_text.rstrip()
        blocks = list(_CODE_TAG.finditer(tail))
        if not blocks or blocks[-1].end() != len(tail):
            return None
        code = blocks[-1].group(1)
        inner = _INNER_FENCE.match(code)
        if inner:
            code = inner.group(1)
    code = code.strip("\n")
    return code if code.strip() else None


def code_block_spans(text: str, fmt: ToolFormat) -> list[tuple[int, int, str]]:
    """(start, end, code) of every closed, non-empty code block of ``fmt`` in ``text``, in order; ``code`` is what
    ``extract_call`` would run for that block.

    >>> code_block_spans("hi ```python\\nx = 1\\n```\\n```python\\nopen", TORL)
    [(3, 22, 'x = 1')]
    >>> code_block_spans("<code>\\n```python\\nprint(2)\\n```\\n</code>", RETOOL)
    [(0, 37, 'print(2)')]
    """
    out = []
    for m in (_PY_BLOCK if fmt.name == "torl" else _CODE_TAG).finditer(text):
        code = m.group(1)
        if fmt.name != "torl":
            inner = _INNER_FENCE.match(code)
            code = inner.group(1) if inner else code
        code = code.strip("\n")
        if code.strip():
            out.append((m.start(), m.end(), code))
    return out


def code_blocks(text: str, fmt: ToolFormat) -> list[str]:
    """The code of every closed, non-empty code block in ``text`` (see ``code_block_spans``)."""
    return [code for _, _, code in code_block_spans(text, fmt)]


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the first and last ``max_chars // 2`` characters joined by '...' (ToRL: 128 + ... + 128).

    >>> truncate_middle("abcdefghij", 4)
    'ab...ij'
    >>> truncate_middle("short", 10)
    'short'
    """
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "..." + text[len(text) - half :]


def observation_body(result: ExecResult, timeout_s: float, error_last_line_only: bool = True) -> str:
    """What the model is told about one execution, before truncation."""
    out = result.stdout.rstrip("\n")
    if result.kind == ExecKind.OK:
        return out
    if result.kind == ExecKind.ERROR:
        err = result.error_line or (result.stderr.strip().splitlines() or ["Error"])[-1]
        if not error_last_line_only and result.stderr.strip():
            err = result.stderr.strip()
        return f"{out}\n{err}" if out else err
    if result.kind == ExecKind.TIMEOUT:
        msg = f"TimeoutError: execution took longer than {timeout_s:g} seconds"
    elif result.kind == ExecKind.RESOURCE:
        msg = f"MemoryError: {result.detail}" if result.detail else "MemoryError: resource limit exceeded"
        if result.detail and not result.detail.lower().startswith("memory"):
            msg = f"ResourceError: {result.detail}"
    else:  # INFRA: the trajectory will be dropped from training; keep the model's context honest anyway
        msg = "SandboxError: the code could not be executed"
    return f"{out}\n{msg}" if out else msg


def render_observation(
    result: ExecResult, fmt: ToolFormat, *, max_chars: int, timeout_s: float, error_last_line_only: bool = True,
    turn_text: str = "",
) -> str:
    """The exact text inserted after a code call (tokenized on its own, masked out of the loss).

    For torl, when the model already wrote the ```output opener itself, only the rest is inserted.

    >>> r = ExecResult(kind=ExecKind.OK, stdout="391\\n")
    >>> render_observation(r, TORL, max_chars=256, timeout_s=5)
    '```output\\n391\\n```\\n'
    >>> render_observation(r, RETOOL, max_chars=256, timeout_s=5)
    '\\n<interpreter>\\n391\\n</interpreter>\\n'
    """
    body = truncate_middle(observation_body(result, timeout_s, error_last_line_only), max_chars)
    if fmt.name == "torl":
        if turn_text.rstrip().endswith("```output"):
            return f"\n{body}\n```\n"
        lead = "" if turn_text.endswith("\n") or not turn_text else "\n"
        return f"{lead}```output\n{body}\n```\n"
    return f"\n<interpreter>\n{body}\n</interpreter>\n"


def format_observation(result: ExecResult, cfg: "ToolConfig", turn_text: str = "") -> str:
    """The observation a rollout with this tool config would insert for ``result``."""
    return render_observation(
        result,
        get_format(cfg.format, cfg.trigger),
        max_chars=cfg.max_output_chars,
        timeout_s=cfg.timeout_s,
        error_last_line_only=cfg.error_last_line_only,
        turn_text=turn_text,
    )


def sanitize_text(raw: bytes | str) -> str:
    """Sandbox output as text: invalid UTF-8 replaced, NUL bytes dropped (they break tokenizers and JSON)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text.replace("\x00", "")
