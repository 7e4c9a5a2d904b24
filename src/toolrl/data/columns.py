"""Column mapping (pure): which field of a row is the problem, the answer, the id, the source, the chat prompt.

Detection covers the layouts data in this field ships in:
- verl parquet (ToRL, SimpleTIR, DAPO-Math, verl's ReTool recipe): ``data_source``, ``prompt`` (chat messages),
  ``reward_model.ground_truth``, ``extra_info.id`` / ``extra_info.index``;
- Hugging Face sets: ``problem`` / ``question`` / ``Problem``, ``answer`` / ``final_answer`` / ``solution``;
- SFT sets: ``messages`` / ``conversations``.
Every choice can be overridden by name (dotted for nested fields: ``reward_model.ground_truth``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from toolrl.errors import DataError
from toolrl.reward.extract import last_boxed
from toolrl.types import Problem

PROBLEM_KEYS = ("problem", "question", "Problem", "Question", "query", "input", "extra_info.problem",
                "extra_info.question")
ANSWER_KEYS = ("answer", "ground_truth", "reward_model.ground_truth", "final_answer", "Answer", "expected_answer",
               "target", "solution", "output")
ID_KEYS = ("id", "extra_info.id", "unique_id", "ID", "uid", "extra_info.index", "idx", "index")
SOURCE_KEYS = ("data_source",)
MESSAGES_KEYS = ("prompt", "messages", "conversations")
SOLUTION_KEYS = ("solution", "text_solution", "reasoning", "response", "output", "generation")
# An answer taken from one of these is a worked solution: its last \boxed{} is the answer.
_FULL_TEXT = {"solution", "output", "response", "generation", "text_solution", "reasoning"}


@dataclass(frozen=True)
class ColumnMap:
    """Dotted field names; None = absent. ``problem`` None means: the last user turn of ``messages``."""

    problem: str | None
    answer: str | None
    id: str | None = None
    source: str | None = None
    messages: str | None = None
    solution: str | None = None

    @property
    def answer_from_text(self) -> bool:
        return bool(self.answer) and self.answer.rsplit(".", 1)[-1] in _FULL_TEXT


@dataclass(frozen=True)
class ColumnOverrides:
    problem: str | None = None
    answer: str | None = None
    id: str | None = None
    source: str | None = None
    messages: str | None = None
    solution: str | None = None


_MISSING = object()


def get_field(row: Mapping[str, Any], path: str) -> Any:
    """``row[path]``, or the nested value for a dotted path; ``None`` when absent.

    >>> get_field({"reward_model": {"ground_truth": "7"}}, "reward_model.ground_truth")
    '7'
    >>> get_field({"a.b": 1}, "a.b"), get_field({"a": None}, "a.b")
    (1, None)
    """
    if path in row:
        return row[path]
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_messages(value: Any) -> bool:
    """A list of chat messages: dicts with ``role`` and ``content`` (or ShareGPT's ``from`` / ``value``)."""
    if hasattr(value, "tolist"):  # numpy arrays from pandas/pyarrow
        value = value.tolist()
    return (isinstance(value, (list, tuple)) and bool(value)
            and all(isinstance(m, Mapping) and ("role" in m or "from" in m) for m in value))


def normalize_messages(value: Any) -> list[dict[str, str]]:
    """Chat messages as ``[{"role", "content"}]``; ShareGPT ``from``/``value`` are renamed (human -> user, gpt -> assistant).

    >>> normalize_messages([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}])
    [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}]
    """
    roles = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
    if hasattr(value, "tolist"):
        value = value.tolist()
    out = []
    for m in value:
        role = str(m.get("role") or roles.get(str(m.get("from")), str(m.get("from"))))
        content = m.get("content", m.get("value"))
        out.append({"role": roles.get(role, role), "content": "" if content is None else str(content)})
    return out


def _scalar_or_list(value: Any) -> bool:
    """Text, a number, or a list of them (OlympiadBench's final_answer): an answer or problem, not a structure."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, (str, int, float)) for v in value)
    return isinstance(value, (str, int, float))


def _first_present(rows: Sequence[Mapping[str, Any]], keys: Iterable[str], want_text: bool = False) -> str | None:
    for key in keys:
        values = [get_field(r, key) for r in rows]
        if any(v is not None for v in values):
            if want_text and not any(_scalar_or_list(v) for v in values if v is not None):
                continue
            return key
    return None


def detect_columns(sample: Sequence[Mapping[str, Any]], overrides: ColumnOverrides = ColumnOverrides()) -> ColumnMap:
    """Choose columns from a few sample rows; overrides win.

    >>> verl = {"data_source": "aime24", "prompt": [{"role": "user", "content": "q"}],
    ...         "reward_model": {"ground_truth": "7"}, "extra_info": {"id": "u1"}}
    >>> detect_columns([verl])
    ColumnMap(problem=None, answer='reward_model.ground_truth', id='extra_info.id', source='data_source', messages='prompt', solution=None)
    >>> detect_columns([{"question": "q", "solution": "so \\\\boxed{2}"}]).answer_from_text
    True
    """
    msgs = overrides.messages or next((k for k in MESSAGES_KEYS if any(is_messages(get_field(r, k)) for r in sample)), None)
    problem = overrides.problem or _first_present(sample, PROBLEM_KEYS, want_text=True)
    answer = overrides.answer or _first_present(sample, ANSWER_KEYS, want_text=True)
    solution = overrides.solution or _first_present(sample, [k for k in SOLUTION_KEYS if k != answer], want_text=True)
    return ColumnMap(
        problem=problem,
        answer=answer,
        id=overrides.id or _first_present(sample, ID_KEYS),
        source=overrides.source or _first_present(sample, SOURCE_KEYS),
        messages=msgs,
        solution=solution,
    )


def columns_of(sample: Sequence[Mapping[str, Any]]) -> list[str]:
    """Top-level names plus one level of nested ones (``reward_model.ground_truth``), for error hints."""
    names: dict[str, None] = {}
    for r in sample:
        for k, v in r.items():
            names[k] = None
            if isinstance(v, Mapping):
                for sub in v:
                    names[f"{k}.{sub}"] = None
    return list(names)


def user_turn(messages: Sequence[Mapping[str, str]]) -> str | None:
    """The last user message's text."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return None


def answer_text(value: Any, from_text: bool) -> str | None:
    """A ground truth as a string: lists are joined (several answers), a worked solution gives its boxed answer.

    >>> answer_text(27, False), answer_text(["1", "2"], False), answer_text("so \\\\boxed{\\\\frac12}.", True)
    ('27', '1, 2', '\\\\frac12')
    """
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v).strip() for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if from_text:
        return last_boxed(text)
    return text or None


def row_to_problem(row: Mapping[str, Any], cmap: ColumnMap, index: int, where: str, default_source: str) -> Problem:
    """One row as a Problem. Fields other than the mapped ones go to ``meta``; a chat prompt is kept as
    ``meta["prompt_messages"]`` (used as written with ``prompt.template=dataset``)."""
    messages = None
    if cmap.messages:
        raw = get_field(row, cmap.messages)
        messages = normalize_messages(raw) if is_messages(raw) else None
    if cmap.problem:
        text = get_field(row, cmap.problem)
        problem = None if text is None else str(text)
    else:
        problem = user_turn(messages) if messages else None
    if not problem or not problem.strip():
        raise DataError(f"{where}: missing problem", "set data.problem_key=COLUMN (dotted for nested fields)")
    if not cmap.answer:
        raise DataError(f"{where}: missing answer", "set data.answer_key=COLUMN, e.g. reward_model.ground_truth")
    answer = answer_text(get_field(row, cmap.answer), cmap.answer_from_text)
    if not answer:
        what = f"no \\boxed{{}} answer in '{cmap.answer}'" if cmap.answer_from_text else "missing answer"
        raise DataError(f"{where}: {what}", "set data.answer_key=COLUMN to the ground-truth column")
    raw_id = get_field(row, cmap.id) if cmap.id else None
    source = get_field(row, cmap.source) if cmap.source else None
    pid = str(raw_id) if raw_id not in (None, "") else f"{source or default_source}-{index}"
    used = {cmap.problem, cmap.id, cmap.messages} | (set() if cmap.answer_from_text else {cmap.answer})
    meta = {k: _plain(v) for k, v in row.items() if k not in used and v is not None}
    if messages is not None:
        meta["prompt_messages"] = messages
    if source is not None:
        meta["data_source"] = str(source)
    return Problem(id=pid, problem=problem, answer=answer, meta=meta)


def _plain(value: Any) -> Any:
    """numpy / pyarrow values as plain Python (meta goes to JSON files)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
