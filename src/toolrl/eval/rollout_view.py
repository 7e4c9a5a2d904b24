"""Reading saved rollouts and turning a trajectory into display blocks (pure; rendering lives in the CLI).

A trajectory becomes a list of ``Block``: prose the model wrote, code the model wrote (trained on), and
interpreter output (masked: never trained on). ``--tokens`` views come from ``token_rows``, built from the
token ids and the loss mask themselves, so they show exactly what the trainer sees.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from toolrl.errors import DataError
from toolrl.types import Trajectory

BlockKind = Literal["prose", "code", "observation"]
_CODE = re.compile(r"```(?:python|py)[ \t]*\n.*?(?:```|\Z)|<code>.*?(?:</code>|\Z)", re.DOTALL)
_FIELDS = {f.name for f in dataclasses.fields(Trajectory)}


@dataclass
class Block:
    kind: BlockKind
    text: str


@dataclass
class Record:
    index: int  # line number in the file, 0-based: what --index selects
    traj: Trajectory
    extra: dict[str, Any]  # fields a writer added beyond Trajectory (e.g. advantage during training)


def rollout_file(run_dir: Path, step: int | None = None) -> Path:
    """The rollouts of a run: eval's rollouts.jsonl, or training's rollouts/step_XXXXXX.jsonl (latest by default)."""
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise DataError(f"run directory '{run_dir}' not found", "give a directory written by `toolrl eval` or `toolrl train`")
    steps_dir = run_dir / "rollouts"
    if step is None and (run_dir / "rollouts.jsonl").is_file():
        return run_dir / "rollouts.jsonl"
    files = sorted(steps_dir.glob("step_*.jsonl")) if steps_dir.is_dir() else []
    if not files:
        raise DataError(f"no rollouts in '{run_dir}'", "expected rollouts.jsonl (eval) or rollouts/step_*.jsonl (train)")
    if step is None:
        return files[-1]
    path = steps_dir / f"step_{step:06d}.jsonl"
    if not path.is_file():
        available = ", ".join(str(int(f.stem.split("_")[1])) for f in files[-10:])
        raise DataError(f"no rollouts for step {step} in '{run_dir}'", f"steps with rollouts: {available}")
    return path


def read_rollouts(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                traj = Trajectory.from_dict({k: v for k, v in d.items() if k in _FIELDS})
            except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
                raise DataError(f"{path}:{i + 1}: not a saved trajectory ({type(e).__name__}: {e})".splitlines()[0],
                                "the file should hold one Trajectory.to_dict() per line") from None
            records.append(Record(len(records), traj, {k: v for k, v in d.items() if k not in _FIELDS}))
    return records


def select(records: list[Record], *, index: int | None = None, wrong: bool = False, with_errors: bool = False,
           limit: int | None = None) -> list[Record]:
    """Filters of `toolrl inspect rollout`; errors mean any call whose kind is not ok (infra included)."""
    if index is not None:
        if not 0 <= index < len(records):
            raise DataError(f"--index {index} is out of range", f"the file holds {len(records)} trajectories (0..{len(records) - 1})")
        return [records[index]]
    out = [r for r in records if (not wrong or r.traj.correct is False)
           and (not with_errors or any(c.kind.value != "ok" for c in r.traj.calls))]
    return out[:limit] if limit is not None else out


def blocks(traj: Trajectory) -> list[Block]:
    """Model text split into prose and code blocks; observations kept whole."""
    out: list[Block] = []
    for seg in traj.segments:
        if seg.kind == "observation":
            out.append(Block("observation", seg.text))
            continue
        pos = 0
        for m in _CODE.finditer(seg.text):
            if m.start() > pos:
                out.append(Block("prose", seg.text[pos : m.start()]))
            out.append(Block("code", m.group(0)))
            pos = m.end()
        if pos < len(seg.text):
            out.append(Block("prose", seg.text[pos:]))
    return [b for b in out if b.text.strip() or b.kind == "observation"]


def code_body(block_text: str) -> str:
    """The Python inside a code block, without fences or tags (for syntax highlighting)."""
    text = re.sub(r"^\s*<code>\s*|\s*</code>\s*$", "", block_text)
    text = re.sub(r"^\s*```[a-zA-Z]*[ \t]*\n?", "", text)
    return re.sub(r"\n?```\s*$", "", text)


def token_rows(traj: Trajectory, decode: Callable[[int], str] | None) -> list[tuple[int, int, int, str | None]]:
    """(position, token id, mask, text or None) for every response token, straight from ids and mask."""
    return [(i, tid, traj.loss_mask[i] if i < len(traj.loss_mask) else -1, decode(tid) if decode else None)
            for i, tid in enumerate(traj.response_ids)]


def verdict(traj: Trajectory) -> str:
    if traj.correct is None:
        return "not graded"
    return "correct" if traj.correct else "wrong"
