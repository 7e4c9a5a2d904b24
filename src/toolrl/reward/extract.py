"""Pure final-answer extraction: the last ``\\boxed{...}`` (or ``\\fbox``), or ReTool's ``<answer>`` tag; optionally
(``reward.extract=boxed_or_last_number``, ReTool's evaluation code) the last number on the last line."""

from __future__ import annotations

import re

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s${}]+)")  # "\boxed 5": braces are optional in LaTeX for one token
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Code and program output are not answers: a `print("\\boxed{42}")` or its output must not be graded.
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_NOT_PROSE = re.compile(r"```.*?(?:```|\Z)|<code>.*?(?:</code>|\Z)|<interpreter>.*?(?:</interpreter>|\Z)", re.DOTALL)


def _balanced(text: str, start: int) -> int | None:
    """Index just past the brace closing the one opened at ``start - 1``; None when it never closes."""
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped brace (\{ or \}) is content, not structure
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` in ``text``.

    >>> last_boxed(r"first \\boxed{1}, then \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed{3} and a cut-off \\boxed{4")
    '3'
    >>> last_boxed("no box") is None
    True
    """
    found: list[tuple[int, str]] = []
    for m in _BOX_OPEN.finditer(text):
        end = _balanced(text, m.end())
        if end is not None:
            found.append((m.start(), text[m.end() : end]))
    for m in _BOX_BARE.finditer(text):
        found.append((m.start(), m.group(1)))
    if not found:
        return None
    return max(found)[1].strip()


def _strip_math(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    return s


def last_number_on_last_line(text: str) -> str | None:
    """The last number on the last non-empty line (thousands separators dropped), or None.

    >>> last_number_on_last_line("so 3 apples\\nThe answer is 1,024.\\n")
    '1024'
    >>> last_number_on_last_line("42\\nno number here") is None
    True
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    found = _NUMBER.findall(lines[-1])
    return found[-1].replace(",", "").lstrip("+") if found else None


def extract_answer(response: str, tool_format: str = "torl", rule: str = "boxed") -> str | None:
    """The final answer written in ``response``, or None when there is none.

    torl: the content of the last complete ``\\boxed{...}`` (``\\fbox{...}`` too; nested braces are kept).
    retool: the last ``<answer>...</answer>`` tag wins: its last boxed content, else the tag's text; without
    a tag, the last boxed answer anywhere. Both ignore code blocks and interpreter output.

    >>> extract_answer(r"so $x = \\boxed{\\frac{3}{4}}$.")
    '\\\\frac{3}{4}'
    >>> extract_answer(r"<answer>\\boxed{42}</answer>", "retool")
    '42'
    >>> extract_answer(r"try \\boxed{1} ... <answer> 7 </answer>", "retool")
    '7'
    >>> extract_answer("I give up") is None
    True
    >>> extract_answer("So the total is 17", rule="boxed_or_last_number")  # ReTool's evaluation fallback
    '17'

    >>> extract_answer("```python\\nprint(r'\\\\boxed{1}')\\n```\\n```output\\n\\\\boxed{1}\\n```") is None
    True
    """
    response = _NOT_PROSE.sub(" ", response)
    if tool_format == "retool":
        tags = _ANSWER_TAG.findall(response)
        if tags:
            inner = tags[-1]
            boxed = last_boxed(inner)
            answer = boxed if boxed is not None else _strip_math(inner)
            if answer:
                return answer
    answer = last_boxed(response)
    if not answer and rule == "boxed_or_last_number":
        answer = last_number_on_last_line(response)
    return answer or None
