"""Reading rows from where data lives: ``.parquet``, ``.jsonl``, ``.json``, a ``save_to_disk`` directory, or a
Hugging Face dataset id ``org/name[:config][@split]`` loaded through ``datasets`` (so its cache, offline mode and
authentication behave as they do for any ``datasets`` user).

Rows come back as plain dicts with a location each (``file.jsonl:12``, ``file.parquet row 3``) for error messages;
:func:`load_problem_set` maps them to Problems with :mod:`toolrl.data.columns` and merges repeated rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.data.columns import ColumnMap, ColumnOverrides, columns_of, detect_columns, row_to_problem
from toolrl.data.repeats import RepeatReport, merge_repeats, problem_key
from toolrl.errors import DataError
from toolrl.types import Problem

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?(?:@[\w.\[\]:%+-]+)?$")
_SAMPLE = 64  # rows used to detect the columns


@dataclass
class RowSet:
    """Rows of one source, each with where it came from."""

    name: str  # file stem or dataset id: the default data_source
    rows: list[dict[str, Any]]
    where: list[str]


@dataclass
class ProblemSet:
    name: str
    problems: list[Problem]
    columns: ColumnMap
    repeats: RepeatReport = field(default_factory=RepeatReport)
    rows: int = 0


def is_hub_id(spec: str) -> bool:
    """``org/name[:config][@split]`` that is not an existing path or a data file name.

    >>> is_hub_id("HuggingFaceH4/MATH-500@test"), is_hub_id("org/set:cfg"), is_hub_id("data/x.parquet"), is_hub_id("aime24")
    (True, True, False, False)
    """
    if Path(spec).expanduser().exists() or spec.endswith(FILE_SUFFIXES) or spec.startswith((".", "/", "~")):
        return False
    return bool(_HUB_ID.match(spec))


def parse_hub_id(spec: str) -> tuple[str, str | None, str | None]:
    """(dataset id, config, split).

    >>> parse_hub_id("org/name:main@test[:10]"), parse_hub_id("org/name")
    (('org/name', 'main', 'test[:10]'), ('org/name', None, None))
    """
    rest, _, split = spec.partition("@")
    name, _, config = rest.partition(":")
    return name, config or None, split or None


def read_jsonl(path: Path) -> RowSet:
    rows, where = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            loc = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{loc}: not valid JSON ({e.msg})", "each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{loc}: expected a JSON object", "each line must be one JSON object")
            rows.append(row)
            where.append(loc)
    return RowSet(path.stem, rows, where)


def read_json(path: Path) -> RowSet:
    """A JSON array of objects, or an object holding one (``{"data": [...]}``)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})", "give a JSON array of objects, or JSONL") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = lists[0] if len(lists) == 1 else obj
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise DataError(f"{path}: expected a JSON array of objects", 'e.g. [{"problem": "...", "answer": "..."}]')
    return RowSet(path.stem, obj, [f"{path} row {i}" for i in range(len(obj))])


def read_parquet(path: Path) -> RowSet:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()  # nested structs and lists become dicts and lists
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot be read as parquet ({str(e).splitlines()[0][:120]})",
                        "check the file, or convert it to JSONL") from None
    return RowSet(path.stem, rows, [f"{path} row {i}" for i in range(len(rows))])


def _pick_split(obj: Any, split: str | None, default_split: str, label: str) -> Any:
    """A Dataset from a DatasetDict: the asked split, else the default, else the only one."""
    if not hasattr(obj, "keys"):
        return obj
    names = list(obj.keys())
    if split:
        if split not in names:
            raise DataError(f"{label} has no split '{split}'", f"splits: {', '.join(names)}; write {label}@SPLIT")
        return obj[split]
    if default_split in names:
        return obj[default_split]
    if len(names) == 1:
        return obj[names[0]]
    raise DataError(f"{label} has several splits ({', '.join(names)})", f"choose one: {label}@{names[0]} or data.split=NAME")


def read_saved(path: Path, split: str | None, default_split: str) -> RowSet:
    """A directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    from datasets import load_from_disk

    try:
        obj = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"'{path}' is a directory but not a saved dataset",
                        "give a .parquet/.jsonl/.json file, or a directory written by save_to_disk") from None
    ds = _pick_split(obj, split, default_split, str(path))
    return RowSet(path.name, [dict(r) for r in ds], [f"{path} row {i}" for i in range(len(ds))])


def read_hub(spec: str, split: str | None, default_split: str) -> RowSet:
    """A Hugging Face dataset through ``datasets.load_dataset`` (its cache is used offline)."""
    name, config, id_split = parse_hub_id(spec)
    split = id_split or split
    try:
        from datasets import load_dataset

        obj = load_dataset(name, config, split=split) if split else load_dataset(name, config)
    except Exception as e:  # noqa: BLE001 - offline, missing, gated, renamed: one message
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DataError(f"Hugging Face dataset '{spec}' could not be loaded ({detail})",
                        "check the id (org/name[:config][@split]) and network access, or download it once and use the "
                        "local file or save_to_disk directory") from None
    ds = _pick_split(obj, None, default_split, spec)
    return RowSet(name, [dict(r) for r in ds], [f"{spec} row {i}" for i in range(len(ds))])


def read_rows(spec: str, split: str | None = None, default_split: str = "test") -> RowSet:
    """Rows from a file, a ``save_to_disk`` directory or a Hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_saved(path, split, default_split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return read_jsonl(path)
        if suffix == ".json":
            return read_json(path)
        if suffix == ".parquet":
            return read_parquet(path)
        raise DataError(f"'{path}': unknown data file type '{suffix}'", "use .parquet, .jsonl or .json")
    if is_hub_id(spec):
        return read_hub(spec, split, default_split)
    raise DataError(f"data file '{spec}' not found",
                    "give an existing .parquet/.jsonl/.json path or a Hugging Face id org/name[:config][@split]")


def to_problems(rowset: RowSet, overrides: ColumnOverrides = ColumnOverrides()) -> ProblemSet:
    """Map rows to Problems; repeated rows are merged and reported, a reused id with other content is an error."""
    if not rowset.rows:
        raise DataError(f"data file '{rowset.name}' has no problems",
                        'add rows like {"id": "1", "problem": "...", "answer": "..."}')
    cmap = detect_columns(rowset.rows[:_SAMPLE], overrides)
    if cmap.problem is None and cmap.messages is None:
        raise DataError(f"{rowset.name}: no problem column found (columns: {', '.join(columns_of(rowset.rows[:_SAMPLE]))})",
                        "set data.problem_key=COLUMN")
    if cmap.answer is None:
        raise DataError(f"{rowset.where[0]}: missing answer (columns: {', '.join(columns_of(rowset.rows[:_SAMPLE]))})",
                        "set data.answer_key=COLUMN, e.g. reward_model.ground_truth")
    problems = [row_to_problem(row, cmap, i, loc, rowset.name) for i, (row, loc) in enumerate(zip(rowset.rows, rowset.where))]
    _qualify_ids(problems)
    by_id: dict[str, tuple[str, str, str]] = {}
    for p, loc in zip(problems, rowset.where):
        if by_id.setdefault(p.id, problem_key(p)) != problem_key(p):
            raise DataError(f"{loc}: duplicate id '{p.id}'", "ids must be unique within a file (or set data.id_key)")
    unique, report = merge_repeats(problems)
    return ProblemSet(rowset.name, unique, cmap, report, rows=len(problems))


def _qualify_ids(problems: list[Problem]) -> None:
    """Files that concatenate several sources often number rows per source (verl's ``extra_info.index``): when an
    id occurs under more than one data_source, every id becomes ``<source>-<id>``."""
    sources: dict[str, set[str]] = {}
    for p in problems:
        sources.setdefault(p.id, set()).add(str(p.meta.get("data_source", "")))
    if all(len(s) == 1 for s in sources.values()):
        return
    for p in problems:
        src = p.meta.get("data_source")
        if src is not None and not p.id.startswith(f"{src}-"):
            p.id = f"{src}-{p.id}"


def overrides_from(data_cfg: Any) -> ColumnOverrides:
    """Column overrides from a DataConfig (``data.problem_key`` ...)."""
    return ColumnOverrides(problem=data_cfg.problem_key, answer=data_cfg.answer_key, id=data_cfg.id_key,
                           source=data_cfg.source_key, solution=data_cfg.solution_key)


def load_problem_set(spec: str, data_cfg: Any, default_split: str = "test") -> ProblemSet:
    """Problems of a file or Hub id, columns from ``data_cfg`` overrides or detected."""
    return to_problems(read_rows(spec, data_cfg.split, default_split), overrides_from(data_cfg))
