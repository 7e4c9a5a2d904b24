"""Conversion between toolrl's JSONL and verl-style parquet, so data built here goes to other tools and back.

verl layout, one row per problem: ``data_source``, ``prompt`` (chat messages: the problem as toolrl would prompt
it, or the row's own prompt when it came with one), ``ability``, ``reward_model`` = ``{"style": "rule",
"ground_truth"}``, ``extra_info`` = ``{"id", "index", "problem"}``. SFT rows (``messages``) are written as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from toolrl.config.schema import RootConfig
from toolrl.errors import DataError
from toolrl.types import Problem


def problem_to_verl(p: Problem, index: int, cfg: RootConfig, default_source: str) -> dict[str, Any]:
    from toolrl.rollout.prompts import chat_messages

    own = p.meta.get("prompt_messages")
    return {
        "data_source": str(p.meta.get("data_source") or default_source),
        "prompt": [dict(m) for m in own] if own else chat_messages(p, cfg),
        "ability": str(p.meta.get("ability", "math")),
        "reward_model": {"style": "rule", "ground_truth": p.answer},
        "extra_info": {"id": p.id, "index": index, "problem": p.problem},
    }


def problem_to_jsonl(p: Problem) -> dict[str, Any]:
    """toolrl's JSONL line: id, problem, answer, then the rest of the row. verl's ``reward_model`` and
    ``extra_info`` are dropped (their contents are the answer and the id); its prompt stays as ``prompt_messages``."""
    meta = {k: v for k, v in p.meta.items() if k not in ("repeats", "reward_model", "extra_info")}
    return {"id": p.id, "problem": p.problem, "answer": p.answer, **meta}


def write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")


def convert(src: str, dst: Path, cfg: RootConfig, source: str | None = None) -> tuple[int, str]:
    """Convert ``src`` (any readable file or Hub id) to ``dst`` (.parquet = verl layout, .jsonl = toolrl's).
    Returns (rows written, "problems" or "sft")."""
    from toolrl.data.columns import get_field, is_messages
    from toolrl.data.readers import overrides_from, read_rows, to_problems

    suffix = dst.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        raise DataError(f"cannot write '{dst.name}'", "the output must end in .parquet (verl) or .jsonl (toolrl)")
    rowset = read_rows(src, cfg.data.split, "train")
    sample = rowset.rows[:64]
    has_problem = bool(cfg.data.problem_key) or any(get_field(r, k) is not None for r in sample for k in ("problem", "question", "Problem"))
    is_sft = not has_problem and any(is_messages(get_field(r, k)) for r in sample for k in ("messages", "conversations"))
    if is_sft or (sample and "response_ids" in sample[0]):
        rows = rowset.rows
        (write_parquet if suffix == ".parquet" else write_jsonl)(rows, dst)
        return len(rows), "sft"
    pset = to_problems(rowset, overrides_from(cfg.data))
    if suffix == ".parquet":
        rows = [problem_to_verl(p, i, cfg, source or rowset.name) for i, p in enumerate(pset.problems)]
        write_parquet(rows, dst)
    else:
        rows = [problem_to_jsonl(p) for p in pset.problems]
        write_jsonl(rows, dst)
    return len(rows), "problems"
