"""Sweep summary: per axis point, final accuracy per benchmark and tool-use metrics, mean and spread over seeds.

Numbers come only from the runs' files (``metrics.jsonl``, and ``eval/<bench>/results.json`` for benchmarks the
trainer did not evaluate), never from W&B. The rules, so a reader can recompute any cell by hand:

- final accuracy on a benchmark: the LAST value of ``eval/<bench>/<metric>`` in metrics.jsonl, where ``<metric>``
  is the first present of acc, pass@1, avg@k, mean@k, maj@k;
- ``eval/avg`` (ToRL's "Avg." column): the unweighted mean of a run's final accuracies, when it has two or more
  benchmarks;
- training metrics (reward/mean, acc, code/share, code/success_rate, code/calls_per_response, response/len): the
  mean of the last ``tail`` values logged at RL steps (default 5: one step of a tiny batch is noise);
- mechanism metrics (what a stabiliser logs when it acts, ``MECHANISM_METRICS``; shown when its key is an axis):
  the mean over every RL step that logged them, since a mechanism that acted early and then had nothing left to do
  still acted;
- wall time per step: the median of ``time/step_s`` over RL steps (>= 1; SFT logs at step 0; the first steps
  include start-up);
- spread: sample standard deviation over the seeds of a point (0 with one seed); only finished runs count unless
  ``include_unfinished``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from toolrl.errors import ToolrlError
from toolrl.sweep.spec import RunPlan, SweepSpec, parse_spec
from toolrl.sweep.status import RUNS_DIR, SPEC_COPY, read_status, train_finished

TRAIN_METRICS = ("reward/mean", "acc", "code/share", "code/success_rate", "code/calls_per_response", "response/len")
STEP_TIME = "time/step_s"
AVG_KEY = "eval/avg"  # the cross-benchmark average accuracy (one "/" so it is never taken for a benchmark)
CURVE_METRICS = ("reward/mean", "acc", "code/share")
_ACC_ORDER = ("acc", "pass@1", "avg@", "mean@", "maj@")
# What each stabiliser logs when it acts (docs/stabilisers.md). A sweep over the key shows these columns, so its
# table says whether the mechanism did anything, not only how the runs ended.
MECHANISM_METRICS: dict[str, tuple[str, ...]] = {
    "algo.void_turn_mask": ("train/void_turns", "train/void_masked"),
    "algo.roc_oversample": ("roc/dropped", "roc/dropped_correct", "roc/kept_penalty", "roc/dropped_penalty"),
    "algo.overlong_filter": ("train/overlong_masked",),
    "algo.overlong_buffer": ("train/overlong_penalized",),
    "algo.loss_agg": ("grad_norm", "loss/policy"),
    "algo.norm_adv_by_std": ("grad_norm",),
    "algo.tis_cap": ("tis/clip_frac", "tis/weight_mean", "mismatch_kl"),
    "algo.tis_seq_threshold": ("tis/seq_masked", "mismatch_kl"),
    "algo.dual_clip_c": ("clip_frac", "clip_frac_lower"),
    "algo.filter_zero_signal": ("train/zero_signal_dropped", "train/update_skipped"),
}


@dataclass
class RunData:
    name: str
    point: str
    values: dict[str, Any]  # axis key -> value (seed excluded)
    seed: int
    state: str
    records: list[dict[str, Any]]
    extra_eval: dict[str, float] = field(default_factory=dict)  # eval/<bench>/<metric> from `toolrl eval` results


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int
    min: float
    max: float

    @classmethod
    def of(cls, xs: Sequence[float]) -> "Stat":
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs), min(xs), max(xs))


@dataclass
class PointSummary:
    point: str
    values: dict[str, Any]
    runs: list[str]
    counted: int  # runs that entered the statistics
    metrics: dict[str, Stat]


# ---------------------------------------------------------------- per-run numbers (pure)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def series(records: Iterable[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) for every step that logged ``key``; a step logged twice (resume) keeps its last value."""
    by_step: dict[int, float] = {}
    for rec in records:
        v = _num(rec.get(key))
        if v is not None and "step" in rec:
            by_step[int(rec["step"])] = v
    return sorted(by_step.items())


def final_evals(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last value of every eval/<bench>/<metric> key, in file order."""
    out: dict[str, float] = {}
    for rec in records:
        for k, v in rec.items():
            if k.startswith("eval/") and _num(v) is not None:
                out[k] = float(v)
    return out


def accuracy_key(eval_keys: Iterable[str], bench: str) -> str | None:
    """Which eval/<bench>/<metric> counts as the benchmark's accuracy (see the module docstring)."""
    metrics = [k.split("/", 2)[2] for k in eval_keys if k.startswith(f"eval/{bench}/") and k.count("/") >= 2]
    for pref in _ACC_ORDER:
        for m in metrics:
            if m == pref or (pref.endswith("@") and m.startswith(pref)):
                return f"eval/{bench}/{m}"
    return None


def benchmarks_of(eval_keys: Iterable[str]) -> list[str]:
    return sorted({k.split("/")[1] for k in eval_keys if k.startswith("eval/") and k.count("/") >= 2})


def run_metrics(run: RunData, tail: int = 5) -> dict[str, float]:
    """Every summary number of one run (see the module docstring for the rules)."""
    out: dict[str, float] = {}
    evals = {**final_evals(run.records), **run.extra_eval}
    for bench in benchmarks_of(evals):
        key = accuracy_key(evals, bench)
        if key is not None:
            out[key] = evals[key]
    accs = [v for k, v in out.items() if k.startswith("eval/")]
    if len(accs) >= 2:
        out[AVG_KEY] = statistics.fmean(accs)
    for key in TRAIN_METRICS:
        vals = [v for step, v in series(run.records, key) if step >= 1][-tail:]
        if vals:
            out[key] = statistics.fmean(vals)
    for key in dict.fromkeys(k for ks in MECHANISM_METRICS.values() for k in ks):
        vals = [v for step, v in series(run.records, key) if step >= 1]
        if vals:
            out[key] = statistics.fmean(vals)
    # RL steps only: cold-start SFT logs its own time/step_s at step 0.
    times = [v for step, v in series(run.records, STEP_TIME) if step >= 1]
    if times:
        out[STEP_TIME] = statistics.median(times)
    return out


def summarize(runs: Sequence[RunData], tail: int = 5, include_unfinished: bool = False) -> list[PointSummary]:
    """One PointSummary per axis point, in the order points first appear."""
    order: list[str] = []
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        if r.point not in groups:
            order.append(r.point)
            groups[r.point] = []
        groups[r.point].append(r)
    out = []
    for point in order:
        members = groups[point]
        counted = [r for r in members if include_unfinished or r.state == "finished"]
        per_run = [run_metrics(r, tail) for r in counted]
        keys = sorted({k for m in per_run for k in m})
        stats = {k: Stat.of([m[k] for m in per_run if k in m]) for k in keys}
        out.append(PointSummary(point, dict(members[0].values), [r.name for r in members], len(counted), stats))
    return out


def mechanism_columns(axis_keys: Iterable[str]) -> list[str]:
    """The metrics of the stabilisers swept by ``axis_keys``, in axis order, each once."""
    return list(dict.fromkeys(m for k in axis_keys for m in MECHANISM_METRICS.get(k, ())))


def columns(points: Sequence[PointSummary]) -> list[str]:
    """Table columns: accuracy per benchmark first, then training metrics, the swept stabilisers' metrics, then
    time per step."""
    keys = {k for p in points for k in p.metrics}
    evals = sorted(k for k in keys if k.startswith("eval/") and k != AVG_KEY) + ([AVG_KEY] if AVG_KEY in keys else [])
    swept = mechanism_columns(dict.fromkeys(k for p in points for k in p.values))
    return evals + [k for k in (*TRAIN_METRICS, *swept, STEP_TIME) if k in keys]


def point_curve(runs: Sequence[RunData], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over a point's runs at every step any of them logged ``key``."""
    per_step: dict[int, list[float]] = {}
    for r in runs:
        for step, v in series(r.records, key):
            per_step.setdefault(step, []).append(v)
    steps = sorted(per_step)
    return (steps, [statistics.fmean(per_step[s]) for s in steps], [min(per_step[s]) for s in steps],
            [max(per_step[s]) for s in steps])


def to_json(spec: SweepSpec, points: Sequence[PointSummary], tail: int) -> dict[str, Any]:
    return {
        "sweep": spec.name,
        "axes": [a.key for a in spec.axes],
        "tail": tail,
        "points": [
            {"point": p.point, "values": p.values, "runs": p.runs, "counted": p.counted,
             "metrics": {k: vars(s) for k, s in p.metrics.items()}}
            for p in points
        ],
    }


# ---------------------------------------------------------------- reading a sweep directory


def _flatten_numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten_numbers(v, f"{prefix}{k}/"))
    elif _num(obj) is not None:
        out[prefix.rstrip("/")] = float(obj)
    return out


def read_extra_eval(run_dir: Path) -> dict[str, float]:
    """eval/<bench>/<metric> from `toolrl eval` results.json files under run_dir/eval/<bench>/."""
    out: dict[str, float] = {}
    root = Path(run_dir) / "eval"
    for res in sorted(root.glob("*/results.json")) if root.is_dir() else []:
        try:
            obj = json.loads(res.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # `toolrl eval` keeps its numbers under "metrics" (next to the config, which must not leak in).
        metrics = obj.get("metrics", obj) if isinstance(obj, dict) else {}
        for k, v in _flatten_numbers(metrics).items():
            out[f"eval/{res.parent.name}/{k}"] = v
    return out


def load_sweep(sweep_dir: Path) -> tuple[SweepSpec, list[RunPlan]]:
    copy = Path(sweep_dir) / SPEC_COPY
    if not copy.is_file():
        raise ToolrlError(f"{sweep_dir} is not a sweep directory (no {SPEC_COPY})",
                          "give the directory `toolrl sweep` printed, e.g. runs/sweeps/max_calls")
    spec = parse_spec(yaml.safe_load(copy.read_text()))
    return spec, spec.runs()


def load_runs(sweep_dir: Path) -> tuple[SweepSpec, list[RunData]]:
    from toolrl.tracking.store import read

    spec, plans = load_sweep(sweep_dir)
    out = []
    for plan in plans:
        d = Path(sweep_dir) / RUNS_DIR / plan.name
        st = read_status(d)
        state = st.state if st else ("finished" if train_finished(d) and not plan.extra_benchmarks else "pending")
        values = {k: v for k, v in plan.values.items() if k != "run.seed"}
        out.append(RunData(plan.name, plan.point, values, plan.seed, state, read(d), read_extra_eval(d)))
    return spec, out
