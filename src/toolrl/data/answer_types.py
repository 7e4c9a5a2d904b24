"""Answer types (pure): what kind of ground truth a data set asks for, for `toolrl data stats`.

integer (``204``, ``-3``, ``1,000``), fraction (``\\frac{3}{4}``, ``-7/2``, ``0.25``: a non-integer rational
literal), interval (``[2, 5)``, ``(-\\infty, 3] \\cup (4, 6)``), expression (anything with symbols, roots, pi,
powers or operators, e.g. ``3\\sqrt{2}``, ``x^2+1``), other (words, tuples, several answers, units).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

TYPES = ("integer", "fraction", "expression", "interval", "other")

_INT = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+|[-+]?\d+")
_FRAC = re.compile(r"[-+]?\\[dt]?frac\{?\s*-?\d+\s*\}?\{?\s*\d+\s*\}?|[-+]?\d+\s*/\s*\d+|[-+]?\d*\.\d+")
_INTERVAL = re.compile(r"^[\[(].*,.*[\])](\s*\\cup\s*[\[(].*,.*[\])])*$")
_MATH_SIGNS = re.compile(r"\\(sqrt|pi|frac|dfrac|tfrac|cdot|times|log|ln|sin|cos|tan|infty|left|right|circ)|[\^*+=]|[a-zA-Z]|\d\s*[-/]|\\")


def _strip(ans: str) -> str:
    s = ans.strip().strip("$").strip()
    s = re.sub(r"^\\boxed\{(.*)\}$", r"\1", s)
    s = s.replace("\\!", "").replace("{,}", ",").replace("\\left", "").replace("\\right", "")
    return s.strip().rstrip(".").strip()


def answer_type(answer: str) -> str:
    """One of :data:`TYPES`.

    >>> [answer_type(a) for a in ["204", "$-3$", "1,000", "\\\\frac{3}{4}", "-7/2", "0.25"]]
    ['integer', 'integer', 'integer', 'fraction', 'fraction', 'fraction']
    >>> [answer_type(a) for a in ["[2, 5)", "(-\\\\infty, 3] \\\\cup (4, 6)", "3\\\\sqrt{2}", "x^2+1", "\\\\pi/2"]]
    ['interval', 'interval', 'expression', 'expression', 'expression']
    >>> [answer_type(a) for a in ["(3, 4)", "\\\\text{Monday}", "5 cm", "1, 2", ""]]
    ['other', 'other', 'other', 'other', 'other']
    """
    s = _strip(answer)
    if not s:
        return "other"
    if _INT.fullmatch(s):
        return "integer"
    if _FRAC.fullmatch(s):
        return "fraction"
    if _INTERVAL.match(s):
        # "(3, 4)" is as often a point as an open interval: only unambiguous forms count as intervals
        mixed = s[0] != {")": "(", "]": "["}.get(s[-1], s[0])
        if "\\infty" in s or "\\cup" in s or mixed or s[0] == "[":
            return "interval"
        return "other"
    if "\\text" in s or "," in s or re.search(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", "", s)):
        return "other"  # words, units, tuples and lists of answers
    if _MATH_SIGNS.search(s):
        return "expression"
    return "other"


def count_types(answers: Iterable[str]) -> dict[str, int]:
    """Counts per type, every type present (zeros included), in :data:`TYPES` order."""
    c = Counter(answer_type(a) for a in answers)
    return {t: c.get(t, 0) for t in TYPES}
