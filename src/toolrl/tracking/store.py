"""The local metrics store: ``<run>/metrics.jsonl``, one JSON object per line, the source of truth for the CLI.

W&B's offline files cannot be read back, so everything the CLI shows (inspect, sweep summaries, plots) comes
from this file. It survives SIGKILL: a half-written last line is skipped when reading and cut off before the
next append, so a resumed run never glues a new record onto a broken one.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

METRICS_FILE = "metrics.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe scalar: tensors and numpy numbers become floats; NaN/inf become null (strict JSON has neither)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if hasattr(value, "item"):  # torch / numpy scalar
        value = value.item()
        if isinstance(value, (bool, int)):
            return value
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsStore:
    """Appends ``{"step", "time", **metrics}`` records to ``run_dir/metrics.jsonl``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        _cut_partial_last_line(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record and flush it (a killed process keeps every record logged before the kill)."""
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        record.update({k: _clean(v) for k, v in metrics.items() if k not in ("step", "time")})
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        return record

    def rewind(self, step: int) -> int:
        """Drop records with a step after ``step`` (call after resuming from that checkpoint); returns how many.

        The steps after the last checkpoint are re-run on resume; without this they would appear twice.
        """
        records = read(self.run_dir)
        keep = [r for r in records if int(r.get("step", -1)) <= step]
        if len(keep) == len(records):
            return 0
        self._fh.close()
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in keep)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)  # atomic: a kill here leaves either the old or the new file
        self._fh = open(self.path, "a", encoding="utf-8")
        return len(records) - len(keep)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "MetricsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of ``run_dir/metrics.jsonl`` in file order; [] when the file does not exist.

    Lines that do not parse (a record cut short by a kill) are skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _cut_partial_last_line(path: Path) -> None:
    """Truncate a file that does not end in a newline back to its last complete line."""
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Scan backwards in blocks for the last newline; records are small, so this reads little.
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                fh.truncate(start + nl + 1)
                return
            pos = start
        fh.truncate(0)
