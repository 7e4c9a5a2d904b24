"""The behaviour metrics of a set of responses (pure). Every value is a number, or None when it cannot be
computed from these responses (no code, nothing graded, field not recorded): None is shown as "-", never as 0.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Iterable, Sequence

from toolrl.analysis.features import TrajStats
from toolrl.analysis.purpose import LABELS

# (key, label, kind): kind "rate" prints as a percentage, "num" with two decimals. The order is the table's.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("n", "responses", "int"),
    ("accuracy", "accuracy", "rate"),
    ("response_len", "response length (tokens)", "num"),
    ("code_ratio_written", "responses with code written", "rate"),
    ("code_ratio_executed", "responses with code executed", "rate"),
    ("blocks_written", "code blocks written / response", "num"),
    ("blocks_executed", "code blocks executed / response", "num"),
    ("executed_share", "written blocks executed", "rate"),
    ("unexecuted_by_limit", "blocks not executed because of C", "int"),
    ("hit_limit_share", "responses that used all C calls", "rate"),
    ("before_answer_share", "written blocks before the final answer", "rate"),
    ("pass_rate", "code pass rate", "rate"),
    ("pass_rate_correct", "pass rate in correct responses", "rate"),
    ("pass_rate_incorrect", "pass rate in incorrect responses", "rate"),
    ("last_pass_rate", "last-call pass rate", "rate"),
    ("last_pass_rate_correct", "last-call pass rate, correct", "rate"),
    ("last_pass_rate_incorrect", "last-call pass rate, incorrect", "rate"),
    ("code_lines", "code lines / response with code", "num"),
    ("calls_mean", "calls / response", "num"),
    ("calls_per_correct", "calls / correct response", "num"),
    ("timing_mean", "first call at (share of response)", "rate"),
    ("timing_median", "first call at, median", "rate"),
    ("self_correction_share", "responses that self-correct", "rate"),
    ("self_correction_acc", "accuracy of self-correcting responses", "rate"),
)
KIND = {k: kind for k, _, kind in METRICS}
LABEL = {k: label for k, label, _ in METRICS}


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return statistics.fmean(xs) if xs else None


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _pass(stats: Iterable[TrajStats]) -> float | None:
    oks = [ok for s in stats for ok in s.call_ok]
    return _rate(sum(oks), len(oks))


def _last_pass(stats: Iterable[TrajStats]) -> float | None:
    lasts = [s.call_ok[-1] for s in stats if s.call_ok]
    return _rate(sum(lasts), len(lasts))


def compute(stats: Sequence[TrajStats]) -> dict[str, Any]:
    """Every metric of ``METRICS``, plus the distributions the figures draw (``calls_hist``, ``timing``,
    ``purposes``) and the self-correction cases (indices into ``stats``)."""
    graded = [s for s in stats if s.correct is not None]
    right = [s for s in graded if s.correct]
    wrong = [s for s in graded if not s.correct]
    recorded = all(s.unexecuted is not None for s in stats) and bool(stats)
    with_code = [s for s in stats if (s.written if recorded else s.executed)]
    answered = [s for s in stats if s.before_answer is not None]
    timing = [s.first_call_pos for s in stats if s.first_call_pos is not None]
    fixers = [s for s in stats if s.self_corrected]
    any_code = any(s.executed or s.unexecuted for s in stats)
    written_total = sum(s.written or 0 for s in stats) if recorded else None
    limit_known = bool(stats) and all(s.hit_limit is not None for s in stats)
    purposes = Counter(p for s in stats for p in s.purposes)
    n_blocks = sum(purposes.values())
    out: dict[str, Any] = {
        "n": len(stats),
        "accuracy": _rate(len(right), len(graded)),
        "response_len": _mean(s.length for s in stats),
        "code_ratio_written": _rate(sum(1 for s in stats if s.written), len(stats)) if recorded else None,
        "code_ratio_executed": _rate(sum(1 for s in stats if s.executed), len(stats)),
        "blocks_written": _mean(s.written for s in stats) if recorded else None,  # type: ignore[misc]
        "blocks_executed": _mean(s.executed for s in stats),
        "executed_share": _rate(sum(s.executed for s in stats), written_total) if written_total else None,
        "unexecuted_by_limit": (sum(s.unexecuted or 0 for s in stats if s.hit_limit)
                                if recorded and limit_known and any_code else None),
        "hit_limit_share": (_rate(sum(1 for s in stats if s.hit_limit), len(stats))
                            if limit_known and any_code else None),
        "before_answer_share": _rate(sum(s.before_answer or 0 for s in answered),
                                     sum(len(s.purposes) for s in answered)) if recorded and any_code else None,
        "pass_rate": _pass(stats),
        "pass_rate_correct": _pass(right),
        "pass_rate_incorrect": _pass(wrong),
        "last_pass_rate": _last_pass(stats),
        "last_pass_rate_correct": _last_pass(right),
        "last_pass_rate_incorrect": _last_pass(wrong),
        "code_lines": _mean(s.code_lines for s in with_code),
        "calls_mean": _mean(s.executed for s in stats),
        "calls_per_correct": _mean(s.executed for s in right),
        "timing_mean": _mean(timing),
        "timing_median": statistics.median(timing) if timing else None,
        "self_correction_share": _rate(len(fixers), len(stats)) if any_code else None,
        "self_correction_acc": _rate(sum(1 for s in fixers if s.correct), sum(1 for s in fixers if s.correct is not None)),
        "calls_hist": dict(sorted(Counter(s.executed for s in stats).items())),
        "timing": timing,
        "purposes": {label: purposes[label] / n_blocks for label in LABELS} if n_blocks else None,
        "purpose_counts": {label: purposes[label] for label in LABELS},
    }
    return out


def average(per_bench: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cross-benchmark average (ToRL's "Avg." column): the unweighted mean over benchmarks of each scalar
    metric, over the benchmarks where it is defined (None when it is defined nowhere).

    >>> average({"a": {"accuracy": 0.2, "pass_rate": None}, "b": {"accuracy": 0.4, "pass_rate": 0.5}})
    {'accuracy': 0.3..., 'pass_rate': 0.5}
    """
    keys = [k for k, _, _ in METRICS if any(k in m for m in per_bench.values())]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [m[k] for m in per_bench.values() if isinstance(m.get(k), (int, float))]
        # counts add up; everything else is a per-benchmark mean
        out[k] = (sum(vals) if KIND[k] == "int" else statistics.fmean(vals)) if vals else None
    # Distributions for the figures: purpose shares averaged like the metrics, calls and timing pooled.
    shares = [m["purposes"] for m in per_bench.values() if m.get("purposes")]
    if any("purposes" in m for m in per_bench.values()):
        out["purposes"] = {lab: statistics.fmean(s[lab] for s in shares) for lab in LABELS} if shares else None
    if any("calls_hist" in m for m in per_bench.values()):
        hist: Counter[int] = Counter()
        for m in per_bench.values():
            hist.update({int(k): v for k, v in (m.get("calls_hist") or {}).items()})
        out["calls_hist"] = dict(sorted(hist.items()))
        out["timing"] = [t for m in per_bench.values() for t in m.get("timing") or []]
    return out


def format_value(key: str, value: Any) -> str:
    """Table text: percentages for rates, '-' for a metric that cannot be computed.

    >>> format_value("pass_rate", 0.5), format_value("pass_rate", None), format_value("code_lines", 3.14159)
    ('50.0%', '-', '3.14')
    """
    if value is None:
        return "-"
    kind = KIND.get(key, "num")
    if kind == "rate":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:g}" if isinstance(value, float) else str(value)
    return f"{value:.2f}"
