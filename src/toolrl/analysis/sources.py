"""Finding the rollouts behind each path given to `toolrl analyze`, grouped into series of points.

- a training run directory (``rollouts/step_*.jsonl``): one series, one point per step;
- an evaluation directory (``rollouts.jsonl`` + ``results.json``): one point, its benchmark from results.json;
  several evaluation directories form one series (curves over checkpoints, benchmarks side by side);
- a sweep directory (``sweep.yaml`` + ``runs/<run>/``): one series per run;
- a training run's own evaluations (``<run>/eval/<bench>/rollouts.jsonl``, what a sweep's ``eval.benchmarks``
  writes): one more series, ``<run> · eval``, with a column per benchmark and their average;
- a rollouts ``.jsonl`` file: one point, named after the file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolrl.errors import DataError
from toolrl.eval.rollout_view import Record, read_rollouts
from toolrl.rollout.formats import FORMATS, TORL, ToolFormat
from toolrl.sweep.status import RUNS_DIR, SPEC_COPY

_STEP = re.compile(r"step_(\d+)")


@dataclass
class Point:
    x: int | str  # training step, or checkpoint (step number when the model path names one)
    bench: str
    file: Path
    inspect: str  # `toolrl inspect rollout` arguments that select this file; --index N is appended per case
    records: list[Record]


@dataclass
class Series:
    name: str
    kind: str  # train | eval
    source: Path
    fmt: ToolFormat = TORL
    max_calls: int | None = None
    model: str | None = None  # model.path of the run's config, for the tokenizer (None = embedded model)
    points: list[Point] = field(default_factory=list)
    step_times: dict[int, float] = field(default_factory=dict)  # time/step_s per RL step (training runs)
    reward: dict[int, float] = field(default_factory=dict)  # reward/mean per RL step (training runs)


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        data = {}
    return data if isinstance(data, dict) else {}


def _apply_config(series: Series, cfg: dict[str, Any]) -> None:
    tool = cfg.get("tool") or {}
    series.fmt = FORMATS.get(str(tool.get("format", "torl")), TORL)
    mc = tool.get("max_calls")
    series.max_calls = int(mc) if isinstance(mc, int) else None
    series.model = (cfg.get("model") or {}).get("path")


def _load(file: Path) -> list[Record]:
    try:
        records = read_rollouts(file)
    except DataError as e:
        raise DataError(e.message, "rollouts from an older toolrl or another tool cannot be read; re-create them "
                        "with `toolrl eval` or `toolrl train` of this version") from None
    except OSError as e:
        raise DataError(f"cannot read {file}: {e.strerror}", "check the path and its permissions") from None
    return records


def _metrics_by_step(run_dir: Path, key: str) -> dict[int, float]:
    from toolrl.sweep.summary import series as metric_series
    from toolrl.tracking.store import read

    try:
        return {s: v for s, v in metric_series(read(run_dir), key) if s >= 1}
    except (OSError, ValueError):
        return {}


def train_series(run_dir: Path, name: str | None = None) -> Series:
    files = sorted((run_dir / "rollouts").glob("step_*.jsonl"))
    s = Series(name or run_dir.name, "train", run_dir)
    _apply_config(s, _config(run_dir))
    for f in files:
        step = int(_STEP.search(f.name).group(1))  # type: ignore[union-attr]
        s.points.append(Point(step, "train", f, f"{shlex.quote(str(run_dir))} --step {step}", _load(f)))
    s.step_times = _metrics_by_step(run_dir, "time/step_s")
    s.reward = _metrics_by_step(run_dir, "reward/mean")
    return s


def run_evals(run_dir: Path, name: str) -> Series | None:
    """The evaluations a sweep ran on a training run's final model, as one series (None when there are none)."""
    dirs = sorted(d for d in (run_dir / "eval").glob("*") if (d / "rollouts.jsonl").is_file())
    if not dirs:
        return None
    s = Series(f"{name} · eval", "eval", run_dir / "eval")
    for d in dirs:
        point, cfg = eval_point(d)
        point.x = "final"
        s.points.append(point)
        _apply_config(s, cfg)
    return s


def _checkpoint(cfg: dict[str, Any], fallback: str) -> int | str:
    """Which checkpoint an evaluation ran: the step named in its model path, 'final', or the directory name."""
    path = str((cfg.get("model") or {}).get("path") or "")
    m = _STEP.search(path)
    if m:
        return int(m.group(1))
    return "final" if path.rstrip("/").endswith("final") else fallback


def eval_point(eval_dir: Path) -> tuple[Point, dict[str, Any]]:
    cfg = _config(eval_dir)
    bench = str((cfg.get("eval") or {}).get("bench") or eval_dir.name)
    res = eval_dir / "results.json"
    if res.is_file():
        try:
            bench = str(json.loads(res.read_text()).get("bench", bench))
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    bench = Path(bench).stem if bench.endswith(".jsonl") else bench
    file = eval_dir / "rollouts.jsonl"
    return Point(_checkpoint(cfg, eval_dir.name), bench, file, shlex.quote(str(eval_dir)), _load(file)), cfg


def _kind(path: Path) -> str:
    if path.is_file():
        return "file"
    if not path.is_dir():
        raise DataError(f"'{path}' not found", "give a run directory of `toolrl train`, `toolrl eval` or `toolrl sweep`")
    if (path / SPEC_COPY).is_file() and (path / RUNS_DIR).is_dir():
        return "sweep"
    if (path / "rollouts.jsonl").is_file():
        return "eval"
    if any((path / "rollouts").glob("step_*.jsonl")):
        return "train"
    raise DataError(f"no rollouts in '{path}'",
                    "expected rollouts/step_*.jsonl (toolrl train; train.log_rollouts > 0), rollouts.jsonl "
                    "(toolrl eval) or sweep.yaml with runs/ (toolrl sweep)")


def load_series(paths: list[Path], *, separate: bool = False) -> tuple[list[Series], list[str]]:
    """Series for the given paths, and notes for the user (skipped runs). With ``separate`` every path is its
    own series (``--compare``); otherwise evaluation directories and files join one series."""
    series: list[Series] = []
    notes: list[str] = []
    evals: Series | None = None
    for path in paths:
        kind = _kind(path)
        if kind == "train":
            series.append(train_series(path))
            series += [e for e in [run_evals(path, path.name)] if e]
        elif kind == "sweep":
            runs = sorted(p for p in (path / RUNS_DIR).iterdir() if p.is_dir())
            found = [train_series(r, f"{path.name}/{r.name}") for r in runs if any((r / "rollouts").glob("step_*.jsonl"))]
            if len(found) < len(runs):
                notes.append(f"{len(runs) - len(found)} run(s) of {path} have no rollouts yet and are left out")
            if not found:
                raise DataError(f"no run of sweep '{path}' has rollouts", "run the sweep first: `toolrl sweep SPEC.yaml`")
            for run in found:
                series += [run] + [e for e in [run_evals(run.source, run.name)] if e]
        else:
            if kind == "eval":
                point, cfg = eval_point(path)
            else:
                point, cfg = Point(path.stem, path.stem, path, shlex.quote(str(path)), _load(path)), {}
            if evals is None or separate:
                evals = Series(path.name if separate or len(paths) == 1 else "eval", "eval", path)
                _apply_config(evals, cfg)
                series.append(evals)
            evals.points.append(point)
    for s in series:
        s.points.sort(key=lambda p: (isinstance(p.x, str), p.x if isinstance(p.x, int) else 0))
        if not any(p.records for p in s.points):
            raise DataError(f"the rollouts of '{s.source}' are empty", "the run saved no trajectories; check "
                            "train.log_rollouts (> 0) or that the evaluation finished")
    return series, notes
