"""Cost of the killable grading pool against calling math-verify directly in the main thread.

Baseline: ``math_verify_equal`` in this process (what a single-threaded script would do; no hard time limit).
Pool: ``Grader.equivalent`` (separate warm process, hard deadline, safe from threads). Every round uses new
numbers, so neither side is answered by a cache. Prints medians over rounds and the ratio pool / baseline, measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/grading_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from toolrl.reward.equivalence import math_verify_equal, quick_verdict
from toolrl.reward.grader import Grader

def make_pairs(r: int) -> list[tuple[str, str]]:
    """Ten symbolic comparisons in the styles of MATH-500; numbers vary with r so no cache can answer them."""
    a, b = r + 2, 2 * r + 3
    return [
        (f"\\frac{{1}}{{{a}}}", f"{1 / a!r}"), (f"({a},1), (3,{b})", f"(3,{b}),({a},1)"), (f"{a} cm", f"{a}"),
        (f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"),
        (f"\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}", f"\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}"),
        (f"({a},{b}]", f"[{a},{b})"), (f"x^2+{2 * a}x+{a * a}", f"(x+{a})^2"), (f"{a}\\%", f"{a}"),
        (f"\\frac{{\\pi}}{{{a}}}", f"\\pi/{a}"), (f"0.{a}{a}", f"\\frac{{{a}}}{{{b}}}"),
    ]


QUICK = [("025", "25"), ("1,234", "1234"), ("391", "390"), ("\\text{Evelyn}", "Evelyn")]


def _time(fn, pairs) -> float:
    t0 = time.perf_counter()
    for p, g in pairs:
        fn(p, g)
    return (time.perf_counter() - t0) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    math_verify_equal("1", "1")  # warm the parsers once, as the worker does
    grader = Grader(size=1)
    grader.equivalent("\\frac{1}{3}", "0.3")  # start the worker outside the timed region
    base, pool, quick = [], [], []
    for r in range(args.rounds):
        base.append(_time(math_verify_equal, make_pairs(2 * r)))
        pool.append(_time(grader.equivalent, make_pairs(2 * r + 1)))
        quick.append(_time(grader.equivalent, QUICK))
    grader.close()
    quick_base = statistics.median(_time(quick_verdict, QUICK) for _ in range(args.rounds))
    b, p, q = statistics.median(base), statistics.median(pool), statistics.median(quick)
    print(f"symbolic pairs, in-process math-verify (baseline): {1e3 * b:8.2f} ms/pair")
    print(f"symbolic pairs, grading pool (killable)          : {1e3 * p:8.2f} ms/pair   ratio {p / b:.2f}x")
    print(f"integer/string pairs, pool fast path             : {1e3 * q:8.3f} ms/pair   ratio {q / b:.4f}x of baseline")
    print(f"integer/string pairs, pure quick_verdict         : {1e3 * quick_base:8.3f} ms/pair")


if __name__ == "__main__":
    main()
