"""The training problem stream: a seeded reshuffle per epoch and a position that checkpoints can save (pure)."""

from __future__ import annotations

import random
from typing import Any, Sequence

from toolrl.errors import DataError
from toolrl.types import Problem


class ProblemStream:
    """Draws problems in a fixed shuffled order; ``state()``/``load_state()`` resume exactly at the same problem.

    >>> s = ProblemStream([Problem(str(i), "q", "a") for i in range(5)], seed=0)
    >>> first = [p.id for p in s.next(3)]; saved = s.state(); rest = [p.id for p in s.next(4)]
    >>> s2 = ProblemStream([Problem(str(i), "q", "a") for i in range(5)], seed=0); s2.load_state(saved)
    >>> [p.id for p in s2.next(4)] == rest, sorted(first + rest[:2]) == [str(i) for i in range(5)]
    (True, True)
    """

    def __init__(self, problems: Sequence[Problem], seed: int = 0) -> None:
        if not problems:
            raise ValueError("the training set is empty")
        self.problems = list(problems)
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(f"toolrl-train/{self.seed}/{epoch}").shuffle(order)
        return order

    def next(self, k: int) -> list[Problem]:
        out = []
        for _ in range(k):
            if self.pos >= len(self._order):
                self.epoch += 1
                self.pos = 0
                self._order = self._shuffle(self.epoch)
            out.append(self.problems[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self._order = self._shuffle(self.epoch)


def shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """This rank's share of a step's problems (whole problems, so every group stays on one rank)."""
    return list(items[rank::world_size])


def drop_long_prompts(problems: Sequence[Problem], lengths: Sequence[int], max_tokens: int) -> tuple[list[Problem], int]:
    """Keep the problems whose prompt has at most ``max_tokens`` tokens (ToRL's loader drops them the same way);
    returns the kept problems and how many were dropped. Nothing left is an error.

    >>> ps = [Problem(str(i), "q", "a") for i in range(3)]
    >>> kept, dropped = drop_long_prompts(ps, [10, 500, 20], 400)
    >>> [p.id for p in kept], dropped
    (['0', '2'], 1)
    """
    kept = [p for p, n in zip(problems, lengths) if n <= max_tokens]
    if problems and not kept:
        raise DataError(f"every one of the {len(problems)} training prompts is over rollout.max_prompt_tokens={max_tokens}",
                        f"raise rollout.max_prompt_tokens (the shortest prompt has {min(lengths)} tokens)")
    return kept, len(problems) - len(kept)
