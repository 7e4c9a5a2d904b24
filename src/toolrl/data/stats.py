"""Data set statistics (pure): rows, sources, repeats, answer types, and prompt lengths against a budget."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import median
from typing import Any, Sequence

from toolrl.data.answer_types import count_types
from toolrl.data.readers import ProblemSet


def length_histogram(lengths: Sequence[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) bins of equal width covering ``lengths`` (high inclusive).

    >>> length_histogram([1, 2, 3, 10], bins=3)
    [(1, 4, 3), (5, 8, 0), (9, 10, 1)]
    >>> length_histogram([5, 5], bins=4)
    [(5, 5, 2)]
    """
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    if lo == hi:
        return [(lo, hi, len(lengths))]
    width = -(-(hi - lo + 1) // bins)
    out = []
    for i in range(bins):
        a = lo + i * width
        if a > hi:
            break
        b = min(hi, a + width - 1)
        out.append((a, b, sum(a <= x <= b for x in lengths)))
    return out


def length_summary(lengths: Sequence[int], budget: int) -> dict[str, Any]:
    """min / median / p90 / max and how many prompts exceed ``budget`` tokens."""
    if not lengths:
        return {}
    s = sorted(lengths)
    return {"min": s[0], "median": median(s), "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1],
            "budget": budget, "over_budget": sum(x > budget for x in s)}


@dataclass
class Stats:
    name: str
    rows: int
    unique: int
    sources: dict[str, int]  # unique problems per data_source
    repeats: list[str]
    duplicate_rows: int
    answer_types: dict[str, int]
    columns: dict[str, str | None]
    lengths: dict[str, Any] | None = None
    histogram: list[tuple[int, int, int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compute_stats(pset: ProblemSet, lengths: Sequence[int] | None = None, budget: int = 512, bins: int = 10) -> Stats:
    """Statistics of a loaded set; ``lengths`` are its prompts' token counts (None = not measured)."""
    sources = Counter(str(p.meta.get("data_source", "")) for p in pset.problems)
    return Stats(
        name=pset.name,
        rows=pset.rows,
        unique=len(pset.problems),
        sources={k: v for k, v in sources.items() if k},
        repeats=pset.repeats.lines() if pset.repeats.any else [],
        duplicate_rows=pset.repeats.duplicate_rows,
        answer_types=count_types(p.answer for p in pset.problems),
        columns=dict(pset.columns.__dict__),
        lengths=length_summary(lengths, budget) if lengths is not None else None,
        histogram=length_histogram(lengths, bins) if lengths is not None else None,
    )
