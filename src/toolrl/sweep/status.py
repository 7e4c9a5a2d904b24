"""Per-run status files and the sweep's status table: what resuming a sweep reads to decide what to run.

A run directory holds the trainer's files plus two of ours: ``sweep_status.json`` (state, exit code, error tail)
and ``sweep.log`` (everything the run printed). Writes are atomic, so a killed sweep never leaves a status file
that does not parse.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

STATUS_FILE = "sweep_status.json"
LOG_FILE = "sweep.log"
TABLE_FILE = "status.json"
SPEC_COPY = "sweep.yaml"
RUNS_DIR = "runs"

# pending: never started; running: started and not ended (or the sweep was killed); finished: every phase done;
# failed: a phase exited non-zero; interrupted: stopped by the user, resumes on the next invocation.
STATES = ("pending", "running", "finished", "failed", "interrupted")


@dataclass
class RunStatus:
    name: str
    state: str = "pending"
    phase: str = ""  # train, or eval:<bench>
    returncode: int | None = None
    attempts: int = 0
    resumed: bool = False
    started: float | None = None
    ended: float | None = None
    error: str = ""  # last lines of the log when the run failed
    steps_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_status(run_dir: Path) -> RunStatus | None:
    path = Path(run_dir) / STATUS_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    known = {k: raw[k] for k in RunStatus.__dataclass_fields__ if k in raw}
    return RunStatus(**known)


def write_status(run_dir: Path, status: RunStatus) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / STATUS_FILE, asdict(status))


def train_finished(run_dir: Path) -> bool:
    """The trainer's own done marker: the final checkpoint directory."""
    return (Path(run_dir) / "final").is_dir()


def can_resume(run_dir: Path) -> bool:
    """An interrupted training run with a checkpoint `toolrl train --resume` can continue from."""
    return (Path(run_dir) / "checkpoints" / "latest").exists()


def log_tail(run_dir: Path, lines: int = 15, max_bytes: int = 16384) -> str:
    """The last lines a run printed: the error a person needs to see, without reading a huge log."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def status_table(statuses: Iterable[RunStatus]) -> list[dict[str, Any]]:
    """Rows of the sweep-level table (sweep_dir/status.json)."""
    rows = []
    for s in statuses:
        rows.append({
            "name": s.name,
            "state": s.state,
            "phase": s.phase,
            "steps_done": s.steps_done,
            "attempts": s.attempts,
            "resumed": s.resumed,
            "duration_s": None if s.duration_s is None else round(s.duration_s, 1),
            "returncode": s.returncode,
            "error": s.error.splitlines()[-1] if s.error else "",
        })
    return rows
