"""The built-in task: exact multi-digit arithmetic, where one code call beats mental multiplication.

Problems are generated from a seed, so every run sees the same set. The train and test splits come from
different random streams, so evaluation never reuses a training expression by construction of the seeds.
"""

from __future__ import annotations

import random

from toolrl.types import Problem

# (template, how to compute it); operands a..d each have `digits` digits.
_TEMPLATES: list[tuple[str, object]] = [
    ("{a} * {b}", lambda a, b, c, d: a * b),
    ("{a} * {b} + {c}", lambda a, b, c, d: a * b + c),
    ("{a} * {b} - {c} * {d}", lambda a, b, c, d: a * b - c * d),
    ("({a} + {b}) * {c}", lambda a, b, c, d: (a + b) * c),
    ("{a} * {b} * {c}", lambda a, b, c, d: a * b * c),
    ("{a} + {b} + {c} + {d}", lambda a, b, c, d: a + b + c + d),
    ("({a} - {b}) * ({c} + {d})", lambda a, b, c, d: (a - b) * (c + d)),
]


def arith_problems(size: int, digits: int = 4, seed: int = 0, split: str = "test") -> list[Problem]:
    """``size`` problems such as "Compute 4821 * 7719 + 3048 exactly.", answers as integer strings.

    >>> p = arith_problems(2, digits=4, seed=0)
    >>> p == arith_problems(2, digits=4, seed=0), p[0].id
    (True, 'arith-test-0')
    >>> str(eval(p[0].meta["expression"])) == p[0].answer
    True
    """
    if digits < 1 or size < 0:
        raise ValueError("arith needs digits >= 1 and size >= 0")
    rng = random.Random(f"toolrl-arith/{split}/{seed}/{digits}")  # str seeds are stable across runs
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    out = []
    for i in range(size):
        template, fn = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
        a, b, c, d = (rng.randint(lo, hi) for _ in range(4))
        expr = template.format(a=a, b=b, c=c, d=d)
        answer = fn(a, b, c, d)  # type: ignore[operator]
        out.append(
            Problem(
                id=f"arith-{split}-{i}",
                problem=f"Compute {expr} exactly. Give the final answer as an integer.",
                answer=str(answer),
                meta={"expression": expr, "digits": digits, "answer_format": "integer"},
            )
        )
    return out
