"""Contamination check (pure): word n-gram overlap between a training set and benchmarks.

Texts are lower-cased and cut into words (letters and digits; LaTeX commands count as words), then into
overlapping n-word shingles (13 by default, the usual contamination window). A benchmark problem overlaps a
training problem when they share at least one shingle; problems shorter than n words are compared whole.
``exact`` marks identical normalised texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from toolrl.types import Problem

_WORD = re.compile(r"\\?[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased words and LaTeX commands.

    >>> words("Find $x^2$ if \\\\frac{1}{2}x = 3.")
    ['find', 'x', '2', 'if', '\\\\frac', '1', '2', 'x', '3']
    """
    return _WORD.findall(text.lower())


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    """All n-word windows (the whole text when shorter than n words).

    >>> sorted(shingles("a b c d", 3)), shingles("a b", 3)
    ([('a', 'b', 'c'), ('b', 'c', 'd')], {('a', 'b')})
    """
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


@dataclass
class Overlap:
    eval_id: str
    train_id: str
    shared: int  # shingles in common
    share: float  # shared / shingles of the benchmark problem
    exact: bool
    eval_set: str = ""

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def find_overlaps(train: Sequence[Problem], evals: Sequence[Problem], n: int = 13, min_share: float = 0.0) -> list[Overlap]:
    """Every (benchmark problem, training problem) pair sharing a shingle: identical texts first, then by share.

    >>> tr = [Problem("t1", "the quick brown fox jumps over the lazy dog", "1"), Problem("t2", "other words", "2")]
    >>> ev = [Problem("e1", "The quick brown fox jumps over the lazy dog!", "1"), Problem("e2", "unrelated", "3")]
    >>> [(o.eval_id, o.train_id, o.exact) for o in find_overlaps(tr, ev, n=5)]
    [('e1', 't1', True)]
    """
    index: dict[tuple[str, ...], list[int]] = {}
    norm_train = [" ".join(words(p.problem)) for p in train]
    for i, p in enumerate(train):
        for s in shingles(p.problem, n):
            index.setdefault(s, []).append(i)
    out: list[Overlap] = []
    for e in evals:
        mine = shingles(e.problem, n)
        hits: dict[int, int] = {}
        for s in mine:
            for i in index.get(s, ()):
                hits[i] = hits.get(i, 0) + 1
        norm = " ".join(words(e.problem))
        found = [Overlap(e.id, train[i].id, k, k / len(mine), norm == norm_train[i]) for i, k in hits.items()]
        out.extend(o for o in found if o.share >= min_share)
    return sorted(out, key=lambda o: (-o.exact, -o.share, o.eval_id, o.train_id))
