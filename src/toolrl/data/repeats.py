"""Repeated rows (pure): a benchmark shipped k times over (ToRL's validation parquet holds AIME x4) is one set of
problems sampled k times, not k times as many problems. Rows with the same source, problem text and answer are
merged; the kept row records how many times it appeared in ``meta["repeats"]``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from toolrl.types import Problem

_SPACE = re.compile(r"\s+")


def problem_key(p: Problem) -> tuple[str, str, str]:
    return (str(p.meta.get("data_source", "")), _SPACE.sub(" ", p.problem).strip(), p.answer.strip())


@dataclass
class RepeatReport:
    """Per source: rows read and how often each unique problem appeared."""

    rows: dict[str, int] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)  # source -> repeats of each unique problem

    @property
    def any(self) -> bool:
        return any(c > 1 for cs in self.counts.values() for c in cs)

    @property
    def duplicate_rows(self) -> int:
        return sum(c - 1 for cs in self.counts.values() for c in cs)

    def lines(self) -> list[str]:
        """One line per source, e.g. ``aime24: 30 unique problems x4``.

        >>> r = RepeatReport({"aime24": 120, "math500": 134}, {"aime24": [4] * 30, "math500": [1] * 134})
        >>> r.lines()
        ['aime24: 30 unique problems x4', 'math500: 134 unique problems']
        >>> RepeatReport({"": 5}, {"": [1, 1, 3]}).lines()
        ['3 unique problems in 5 rows (1 repeated, up to x3)']
        """
        out = []
        for source, cs in self.counts.items():
            name = f"{source}: " if source else ""
            n = len(cs)
            distinct = set(cs)
            if distinct == {1}:
                out.append(f"{name}{n} unique problems")
            elif len(distinct) == 1:
                out.append(f"{name}{n} unique problems x{cs[0]}")
            else:
                repeated = sum(c > 1 for c in cs)
                out.append(f"{name}{n} unique problems in {self.rows[source]} rows ({repeated} repeated, up to x{max(cs)})")
        return out


def merge_repeats(problems: Sequence[Problem]) -> tuple[list[Problem], RepeatReport]:
    """Unique problems in first-seen order (``meta["repeats"] = k`` when k > 1), and the report.

    >>> ps = [Problem(str(i), "q%d" % (i % 2), "1", {"data_source": "s"}) for i in range(4)]
    >>> kept, rep = merge_repeats(ps)
    >>> [p.id for p in kept], [p.meta["repeats"] for p in kept], rep.lines()
    (['0', '1'], [2, 2], ['s: 2 unique problems x2'])
    """
    first: dict[tuple[str, str, str], int] = {}
    kept: list[Problem] = []
    hits: Counter[tuple[str, str, str]] = Counter()
    rows: Counter[str] = Counter()
    for p in problems:
        key = problem_key(p)
        rows[key[0]] += 1
        hits[key] += 1
        if key not in first:
            first[key] = len(kept)
            kept.append(p)
    report = RepeatReport(rows=dict(rows))
    for key, i in first.items():
        k = hits[key]
        if k > 1:
            kept[i].meta["repeats"] = k
        report.counts.setdefault(key[0], []).append(k)
    return kept, report
