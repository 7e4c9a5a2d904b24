"""Benchmark registry and problem loading: local JSONL first (data.dir / TOOLRL_DATA_DIR), then the Hub; any other
data file or Hub id goes through :mod:`toolrl.data.readers` (verl parquet, JSONL, JSON, ``datasets``).

Columns are detected (``id``/``problem``/``answer``, verl's ``prompt``/``reward_model.ground_truth``, ...) or set
with ``data.*_key``; other fields go to ``Problem.meta``. ``datasets`` is imported only when a set comes from the
Hugging Face Hub or a ``save_to_disk`` directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolrl.config.schema import DataConfig, RootConfig
from toolrl.data.columns import ColumnMap
from toolrl.data.readers import FILE_SUFFIXES, ProblemSet, is_hub_id, load_problem_set
from toolrl.errors import DataError
from toolrl.eval.arith import arith_problems
from toolrl.types import Problem

_HINT = "download the benchmark as <name>.jsonl (id/problem/answer per line) into a directory and set data.dir=DIR or TOOLRL_DATA_DIR=DIR"


def _gsm8k_answer(solution: Any) -> str:
    return str(solution).split("####")[-1].strip().replace(",", "")


def _olympiad_answer(final: Any) -> str:
    parts = final if isinstance(final, list) else [final]
    return ", ".join(str(p).replace("$", "").strip() for p in parts)


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face Hub and how its fields map to a Problem."""

    dataset: str
    split: str
    problem: str
    answer: str
    id: str | None = None
    config: str | None = None
    answer_fn: Callable[[Any], str] | None = None
    keep: tuple[str, ...] = ()  # extra fields copied to Problem.meta

    def to_problem(self, row: dict[str, Any], index: int, bench: str) -> Problem:
        raw = row[self.answer]
        answer = self.answer_fn(raw) if self.answer_fn else str(raw).strip()
        pid = str(row[self.id]) if self.id and row.get(self.id) is not None else str(index)
        meta = {k: row[k] for k in self.keep if k in row}
        return Problem(id=f"{bench}-{pid}" if not pid.startswith(bench) else pid, problem=str(row[self.problem]),
                       answer=answer, meta=meta)


BENCHMARKS: dict[str, HubSource] = {
    "aime24": HubSource("Maxwell-Jia/AIME_2024", "train", problem="Problem", answer="Answer", id="ID"),
    "aime25": HubSource("math-ai/aime25", "test", problem="problem", answer="answer", id="id"),
    "math500": HubSource("HuggingFaceH4/MATH-500", "test", problem="problem", answer="answer", id="unique_id",
                         keep=("level", "subject")),
    "amc23": HubSource("math-ai/amc23", "test", problem="question", answer="answer", id="id",
                       answer_fn=lambda a: str(int(float(a))) if float(a).is_integer() else str(a)),
    "olympiadbench": HubSource("Hothan/OlympiadBench", "train", problem="question", answer="final_answer", id="id",
                               config="OE_TO_maths_en_COMP", answer_fn=_olympiad_answer,
                               keep=("subfield", "answer_type", "is_multiple_answer", "unit")),
    "gsm8k": HubSource("openai/gsm8k", "test", problem="question", answer="answer", config="main",
                       answer_fn=_gsm8k_answer),
}
BENCHMARK_NAMES: tuple[str, ...] = (*BENCHMARKS, "arith")


def data_dir(cfg: RootConfig) -> Path | None:
    value = cfg.data.dir or os.environ.get("TOOLRL_DATA_DIR")
    return Path(value).expanduser() if value else None


def local_file(name: str, cfg: RootConfig) -> Path | None:
    """``<data.dir>/<name>.jsonl`` when it exists."""
    root = data_dir(cfg)
    if root is None:
        return None
    path = root / f"{name}.jsonl"
    return path if path.is_file() else None


def read_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file (columns detected, repeated rows merged); a bad line raises DataError naming it."""
    if not Path(path).is_file():
        raise DataError(f"data file '{path}' not found", "give an existing .jsonl path")
    return load_problem_set(str(path), DataConfig()).problems


def load_from_hub(name: str) -> list[Problem]:
    """A registered benchmark from its public Hugging Face dataset (needs network access)."""
    src = BENCHMARKS[name]
    try:
        from datasets import load_dataset

        rows = load_dataset(src.dataset, src.config, split=src.split)
    except Exception as e:  # noqa: BLE001 - offline, missing, renamed: all mean "get the file yourself"
        detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"benchmark '{name}' is not in data.dir and Hugging Face dataset '{src.dataset}' "
                        f"could not be loaded ({detail})", _HINT) from None
    return [src.to_problem(dict(row), i, name) for i, row in enumerate(rows)]


def _per_source_limit(problems: list[Problem], limit: int) -> list[Problem]:
    """The first ``limit`` problems of each data_source (a multi-benchmark file keeps all its benchmarks)."""
    taken: dict[str, int] = {}
    out = []
    for p in problems:
        src = str(p.meta.get("data_source", ""))
        if taken.get(src, 0) < limit:
            taken[src] = taken.get(src, 0) + 1
            out.append(p)
    return out


def load_benchmark(name_or_path: str, cfg: RootConfig, limit: int | None = None, default_split: str = "test") -> ProblemSet:
    """Problems of a benchmark name (see BENCHMARK_NAMES), ``arith``, a ``.parquet``/``.jsonl``/``.json`` path, a
    ``save_to_disk`` directory or a Hugging Face id ``org/name[:config][@split]``, with the repeated-rows report.

    Registered benchmarks load from ``<data.dir>/<name>.jsonl`` when present, else from the Hub. ``limit`` keeps the
    first N problems (of each data_source, when the rows name one).
    """
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be > 0, got {limit}", "e.g. --limit 10")
    key = name_or_path.strip()
    if key == "arith":
        problems = arith_problems(cfg.data.arith_size, cfg.data.arith_digits, seed=0, split="test")
        pset = ProblemSet(key, problems, ColumnMap("problem", "answer", "id"), rows=len(problems))
    elif key in BENCHMARKS and os.sep not in key:
        path = local_file(key, cfg)
        if path:
            pset = load_problem_set(str(path), cfg.data)
        else:
            problems = load_from_hub(key)
            pset = ProblemSet(key, problems, ColumnMap("problem", "answer", "id"), rows=len(problems))
    elif key.endswith(FILE_SUFFIXES) or os.sep in key or Path(key).exists() or is_hub_id(key):
        pset = load_problem_set(key, cfg.data, default_split)
    else:
        raise DataError(f"unknown benchmark '{key}'",
                        f"use one of {', '.join(BENCHMARK_NAMES)}, a .parquet/.jsonl/.json path, "
                        "or a Hugging Face id org/name[:config][@split]")
    if limit is not None:
        pset.problems = _per_source_limit(pset.problems, limit)
    return pset


def load_problems(name_or_path: str, cfg: RootConfig, limit: int | None = None) -> list[Problem]:
    """The problems of :func:`load_benchmark` (repeated rows merged)."""
    return load_benchmark(name_or_path, cfg, limit).problems


def load_train_problems(cfg: RootConfig) -> list[Problem]:
    """The training set named by ``data.train``: arith, train (<data.dir>/train/math_aime_train.jsonl),
    a benchmark name, a data file or a Hub id (train split by default). File order; the trainer shuffles with
    data.shuffle_seed."""
    key = cfg.data.train.strip()
    if key == "arith":
        return arith_problems(cfg.data.arith_size, cfg.data.arith_digits, seed=cfg.data.shuffle_seed, split="train")
    if key == "train":
        root = data_dir(cfg)
        if root is None:
            raise DataError("data.train=train needs data.dir", "set data.dir=DIR or TOOLRL_DATA_DIR=DIR (DIR/train/math_aime_train.jsonl)")
        return read_jsonl(root / "train" / "math_aime_train.jsonl")
    return load_benchmark(key, cfg, default_split="train").problems
