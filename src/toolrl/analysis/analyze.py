"""From series of rollouts to the analysis record that tables, figures, analysis.json and the page all read.

Rules a reader can recompute by hand:
- a training series is summarised over its last ``tail`` logged steps pooled together (one step of a small
  batch is noise); an evaluation series by its last checkpoint, per benchmark;
- curves over steps or checkpoints use, at each point, the benchmark's value, or the cross-benchmark average
  when a point has several benchmarks;
- the cross-benchmark average is unweighted (ToRL's "Avg."): each benchmark counts once, whatever its size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from toolrl.analysis.features import Decode, TrajStats, traj_stats
from toolrl.analysis.metrics import average, compute
from toolrl.analysis.sources import Point, Series

SCHEMA_VERSION = 1


def _stats(series: Series, point: Point, decode: Decode | None) -> list[TrajStats]:
    return [traj_stats(r.traj, series.fmt, index=r.index, max_calls=series.max_calls, decode=decode)
            for r in point.records]


def _xs(points: Sequence[Point]) -> list[int | str]:
    out: list[int | str] = []
    for p in points:
        if p.x not in out:
            out.append(p.x)
    return out


def analyze_series(series: Series, *, decode: Decode | None = None, tail: int = 5) -> dict[str, Any]:
    stats = {id(p): _stats(series, p, decode) for p in series.points}
    xs = _xs(series.points)
    benches = sorted({p.bench for p in series.points})
    by_x = []
    for x in xs:
        per_bench = {p.bench: compute(stats[id(p)]) for p in series.points if p.x == x}
        by_x.append({"x": x, "per_bench": per_bench, "average": average(per_bench) if len(per_bench) > 1 else None})
    if series.kind == "train":
        last = series.points[-tail:]
        label = f"step {last[0].x}" if len(last) == 1 else f"steps {last[0].x}-{last[-1].x}"
        pooled = [s for p in last for s in stats[id(p)]]
        per_bench = {"train": compute(pooled)}
    else:
        label = f"checkpoint {xs[-1]}" if len(xs) > 1 else "all"
        per_bench = {p.bench: compute(stats[id(p)]) for p in series.points if p.x == xs[-1]}
    cases = [
        {"x": p.x, "bench": p.bench, "index": s.index, "problem_id": s.problem_id, "sample": s.sample_index,
         "correct": s.correct, "command": f"toolrl inspect rollout {p.inspect} --index {s.index}"}
        for p in series.points for s in stats[id(p)] if s.self_corrected
    ]
    return {
        "name": series.name,
        "kind": series.kind,
        "source": str(series.source),
        "tool_format": series.fmt.name,
        "max_calls": series.max_calls,
        "x_label": "step" if series.kind == "train" else "checkpoint",
        "benchmarks": benches,
        "points": by_x,
        "summary": {"label": label, "per_bench": per_bench,
                    "average": average(per_bench) if len(per_bench) > 1 else None},
        "step_time": series.step_times,
        "reward": series.reward,
        "self_correction_cases": cases,
        "files": {str(p.x) + ("" if series.kind == "train" else f"/{p.bench}"): str(p.file) for p in series.points},
    }


def headline(entry: dict[str, Any]) -> dict[str, Any]:
    """The one column that stands for an entry: its benchmark, or the cross-benchmark average."""
    return entry["average"] if entry.get("average") else next(iter(entry["per_bench"].values()))


def curve(series: dict[str, Any], key: str, bench: str | None = None) -> tuple[list[int | str], list[float | None]]:
    """(x, value) along a series' points (of one benchmark, or the headline); None where the metric is absent."""
    xs = [p["x"] for p in series["points"]]
    if bench is not None:
        return xs, [(p["per_bench"].get(bench) or {}).get(key) for p in series["points"]]
    return xs, [headline(p).get(key) for p in series["points"]]


def analyze(series_list: Sequence[Series], *, decode_for: Callable[[Series], Decode | None] | None = None,
            tail: int = 5) -> dict[str, Any]:
    out = [analyze_series(s, decode=decode_for(s) if decode_for else None, tail=tail) for s in series_list]
    return {"version": SCHEMA_VERSION, "tail": tail, "series": out}
