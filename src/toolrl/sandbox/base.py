"""The sandbox contract: run untrusted code, always return an ExecResult, never raise for the code's own failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from toolrl.types import ExecKind

__all__ = ["ExecKind", "ExecResult", "Sandbox"]


@dataclass
class ExecResult:
    kind: ExecKind
    stdout: str = ""
    stderr: str = ""  # for ERROR: the traceback text (may be capped)
    error_name: str | None = None  # exception class name for ERROR, e.g. "NameError"
    error_line: str | None = None  # last line of the traceback, e.g. "NameError: name 'x' is not defined"
    duration_s: float = 0.0
    truncated: bool = False  # stdout/stderr were capped
    detail: str | None = None  # human-readable reason for TIMEOUT / RESOURCE / INFRA
    attempts: int = 1


@runtime_checkable
class Sandbox(Protocol):
    """Thread-safe: rollouts call ``run`` from many threads at once.

    ``session`` groups calls of one trajectory: stateful backends keep variables between calls of the same
    session; stateless backends ignore it. ``close_session`` releases what a session holds.
    """

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult: ...

    def close_session(self, session: str) -> None: ...

    def close(self) -> None: ...
