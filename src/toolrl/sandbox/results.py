"""Pure helpers around ExecResult: capped capture, result (de)serialisation, failure counting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind


class Capture:
    """Keeps the first and last ``limit // 2`` bytes of a stream, so a huge output still shows head and tail."""

    def __init__(self, limit: int) -> None:
        self.limit = max(2, limit)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            keep = self.limit - self.limit // 2
            if len(self.tail) > keep:
                del self.tail[: len(self.tail) - keep]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
        cut = self.total - len(self.head) - len(self.tail)
        head = bytes(self.head).decode("utf-8", errors="replace")
        tail = bytes(self.tail).decode("utf-8", errors="replace")
        return f"{head}\n...[{cut} bytes cut]...\n{tail}"


def last_line(text: str) -> str | None:
    """The last non-empty line of a traceback: what ToRL shows the model on an error."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return None


def result_to_dict(r: ExecResult) -> dict[str, Any]:
    return {
        "kind": r.kind.value,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "error_name": r.error_name,
        "error_line": r.error_line,
        "duration_s": r.duration_s,
        "truncated": r.truncated,
        "detail": r.detail,
        "attempts": r.attempts,
    }


def result_from_dict(d: dict[str, Any]) -> ExecResult:
    return ExecResult(
        kind=ExecKind(d["kind"]),
        stdout=d.get("stdout", ""),
        stderr=d.get("stderr", ""),
        error_name=d.get("error_name"),
        error_line=d.get("error_line"),
        duration_s=float(d.get("duration_s", 0.0)),
        truncated=bool(d.get("truncated", False)),
        detail=d.get("detail"),
        attempts=int(d.get("attempts", 1)),
    )


def infra(detail: str, attempts: int = 1, duration_s: float = 0.0) -> ExecResult:
    """The sandbox broke: never the model's fault."""
    return ExecResult(ExecKind.INFRA, detail=detail, attempts=attempts, duration_s=duration_s)


def count_kinds(results: Iterable[Any]) -> dict[str, int]:
    """Counts per ExecKind value (every kind present, zeros included) of anything with a ``kind``.

    >>> count_kinds([ExecResult(ExecKind.OK), ExecResult(ExecKind.INFRA)])["infra_error"]
    1
    """
    counts = {k.value: 0 for k in ExecKind}
    for r in results:
        counts[ExecKind(r.kind).value] += 1
    return counts
