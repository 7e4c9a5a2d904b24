"""Benchmark registry and problem loading: local JSONL first (data.dir / TOOLRL_DATA_DIR), then the Hub.

Every local file is JSONL with at least ``id``, ``problem`` and ``answer`` per line; other fields go to
``Problem.meta``. ``datasets`` is imported only when a benchmark has to come from the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolrl.config.schema import RootConfig
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
    """Problems from a JSONL file; a bad line raises DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' not found", "give an existing .jsonl path")
    problems: list[Problem] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})", "each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object", "each line must be one JSON object")
            missing = [k for k in ("id", "problem", "answer") if row.get(k) in (None, "")]
            if missing:
                raise DataError(f"{where}: missing {', '.join(missing)}", 'each line needs "id", "problem" and "answer"')
            pid = str(row["id"])
            if pid in seen:
                raise DataError(f"{where}: duplicate id '{pid}'", "ids must be unique within a file")
            seen.add(pid)
            meta = {k: v for k, v in row.items() if k not in ("id", "problem", "answer")}
            problems.append(Problem(id=pid, problem=str(row["problem"]), answer=str(row["answer"]).strip(), meta=meta))
    if not problems:
        raise DataError(f"data file '{path}' has no problems", 'add lines like {"id": "1", "problem": "...", "answer": "..."}')
    return problems


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


def load_problems(name_or_path: str, cfg: RootConfig, limit: int | None = None) -> list[Problem]:
    """Problems of a benchmark name (see BENCHMARK_NAMES), ``arith``, or a path to a ``.jsonl`` file.

    Registered benchmarks load from ``<data.dir>/<name>.jsonl`` when present, else from the Hub.
    ``limit`` keeps the first N problems.
    """
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be > 0, got {limit}", "e.g. --limit 10")
    key = name_or_path.strip()
    if key == "arith":
        problems = arith_problems(cfg.data.arith_size, cfg.data.arith_digits, seed=0, split="test")
    elif key.endswith(".jsonl") or os.sep in key:
        problems = read_jsonl(key)
    elif key in BENCHMARKS:
        path = local_file(key, cfg)
        problems = read_jsonl(path) if path else load_from_hub(key)
    else:
        raise DataError(f"unknown benchmark '{key}'",
                        f"use one of {', '.join(BENCHMARK_NAMES)}, or a path to a .jsonl file")
    return problems[:limit] if limit is not None else problems


def load_train_problems(cfg: RootConfig) -> list[Problem]:
    """The training set named by ``data.train``: arith, train (<data.dir>/train/math_aime_train.jsonl),
    a benchmark name, or a JSONL path. File order; the trainer shuffles with data.shuffle_seed."""
    key = cfg.data.train.strip()
    if key == "arith":
        return arith_problems(cfg.data.arith_size, cfg.data.arith_digits, seed=cfg.data.shuffle_seed, split="train")
    if key == "train":
        root = data_dir(cfg)
        if root is None:
            raise DataError("data.train=train needs data.dir", "set data.dir=DIR or TOOLRL_DATA_DIR=DIR (DIR/train/math_aime_train.jsonl)")
        return read_jsonl(root / "train" / "math_aime_train.jsonl")
    return load_problems(key, cfg)
