"""Answer equivalence: cheap exact checks first, then math-verify (symbolic) for everything else.

``quick_verdict`` is pure string work and answers the common cases (same string, two integers) without sympy.
``math_verify_equal`` runs math-verify with its own signal timeouts disabled: the caller bounds the time
(see toolrl.reward.grader, which runs it in a separate process it can kill).
"""

from __future__ import annotations

import re

_SPACING = re.compile(r"(?<!\\)\\(?:[!,;:> ]|q?quad)")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|operatorname)\s*\{([^{}]*)\}")
_INT = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")


def clean(s: str) -> str:
    """Normalise notation that never changes the value: spacing commands, ``$``, ``\\left``, a final period.

    >>> clean(r" $10,\\!080$. ")
    '10,080'
    >>> clean(r"\\dfrac{1}{2}")
    '\\\\frac{1}{2}'
    """
    s = s.strip().rstrip(".").strip().strip("$").strip()
    s = _SPACING.sub("", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", " ", s).strip()
    return s.rstrip(".").strip()


def _plain(s: str) -> str:
    """A comparison key for text answers: \\text{} unwrapped, no spaces, lower case."""
    s = _TEXT_CMD.sub(r"\1", clean(s))
    return s.replace(" ", "").replace("\\%", "%").lower()


def _as_int(s: str) -> int | None:
    s = s.replace(" ", "")
    if _INT.fullmatch(s):
        return int(s.replace(",", ""))
    return None


def quick_verdict(pred: str, gold: str) -> bool | None:
    """True/False when string work alone decides, None when a symbolic check is needed.

    >>> quick_verdict("025", "25"), quick_verdict("1,000", "1000"), quick_verdict("24", "25")
    (True, True, False)
    >>> quick_verdict(r"\\text{Evelyn}", "evelyn")
    True
    >>> quick_verdict("0.5", r"\\frac12") is None
    True
    """
    a, b = _plain(pred), _plain(gold)
    if not a:
        return False
    if a == b:
        return True
    ia, ib = _as_int(a), _as_int(b)
    if ia is not None and ib is not None:
        return ia == ib
    return None


def math_verify_equal(pred: str, gold: str) -> bool:
    """Symbolic comparison with math-verify, no timeout of its own (the caller must bound it)."""
    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    # "$...$" rather than "\boxed{...}": in boxed mode math-verify reads "\text{Evelyn}" as a product of
    # symbols and drops "50\%"; inline math keeps both.
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_p = parse(f"${clean(gold)}$", extraction_config=configs, parsing_timeout=None)  # type: ignore[arg-type]
    pred_p = parse(f"${clean(pred)}$", extraction_config=configs, parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_p or not pred_p:
        return False
    return bool(verify(gold_p, pred_p, timeout_seconds=None))
