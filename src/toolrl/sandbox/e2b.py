"""The `e2b` backend: E2B cloud sandboxes through the official `e2b-code-interpreter` SDK.

One E2B sandbox per session (trajectory), reused by its calls and killed by ``close_session``; calls without
a session get a throw-away sandbox. At most ``e2b.concurrency`` sandboxes are alive at once (callers wait).
Transport failures are retried with backoff, then reported as INFRA; the model's own failures never are.
E2B sandboxes are Jupyter kernels, so calls of one session always share variables (stateful).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from toolrl.config.schema import SandboxConfig
from toolrl.errors import SandboxUnavailableError
from toolrl.sandbox.base import ExecResult
from toolrl.sandbox.results import Capture, infra
from toolrl.types import ExecKind

_RESOURCE_ERRORS = {"MemoryError"}


def resolve_api_key(cfg: SandboxConfig) -> str:
    key = cfg.e2b.api_key or os.environ.get("E2B_API_KEY")
    if not key:
        raise SandboxUnavailableError(
            "sandbox.backend=e2b needs an E2B API key and none is set",
            "export E2B_API_KEY=... (or set sandbox.e2b.api_key; any string for a local test server)",
        )
    return key


def execution_to_result(execution: Any, cap: int, duration_s: float) -> ExecResult:
    """Map an SDK ``Execution`` to an ExecResult (pure: no network)."""
    out, err = Capture(cap), Capture(cap)
    for text in execution.logs.stdout:
        out.add(text.encode())
    for res in execution.results:  # a notebook shows the cell's last expression: so does the observation
        if getattr(res, "is_main_result", False) and getattr(res, "text", None):
            out.add((res.text + "\n").encode())
    for text in execution.logs.stderr:
        err.add(text.encode())
    r = ExecResult(ExecKind.OK, duration_s=duration_s)
    e = execution.error
    if e is not None:
        err.add((e.traceback or "").encode())
        r.kind = ExecKind.RESOURCE if e.name in _RESOURCE_ERRORS else ExecKind.ERROR
        r.error_name = e.name
        r.error_line = f"{e.name}: {e.value}" if e.value else e.name
        if r.kind == ExecKind.RESOURCE:
            r.detail = "memory limit reached"
    r.stdout, r.stderr = out.text(), err.text()
    r.truncated = out.truncated or err.truncated
    return r


class E2BSandbox:
    def __init__(self, cfg: SandboxConfig) -> None:
        try:
            import e2b_code_interpreter  # noqa: F401
        except ImportError:
            raise SandboxUnavailableError(
                "sandbox.backend=e2b needs the e2b-code-interpreter package", "pip install 'e2b-code-interpreter>=2,<3'"
            ) from None
        self.cfg = cfg
        self.api_key = resolve_api_key(cfg)
        self._slots = threading.BoundedSemaphore(max(1, cfg.e2b.concurrency))
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._session_locks: dict[str, threading.Lock] = {}

    def _params(self) -> dict[str, Any]:
        e = self.cfg.e2b
        p: dict[str, Any] = {"api_key": self.api_key, "request_timeout": e.request_timeout_s}
        if e.api_url:
            p["api_url"] = e.api_url
        if e.sandbox_url:
            p["sandbox_url"] = e.sandbox_url
        return p

    def _create(self) -> Any:
        from e2b_code_interpreter import Sandbox

        kwargs: dict[str, Any] = {"timeout": self.cfg.e2b.sandbox_timeout_s, **self._params()}
        if self.cfg.e2b.template:
            kwargs["template"] = self.cfg.e2b.template
        return Sandbox.create(**kwargs)

    @staticmethod
    def _kill(sbx: Any) -> None:
        try:
            sbx.kill()
        except Exception:  # already gone: nothing left to free
            pass

    def _session_lock(self, session: str) -> threading.Lock:
        with self._lock:
            return self._session_locks.setdefault(session, threading.Lock())

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        if session is None:
            self._slots.acquire()
            try:
                return self._run_fresh(code, timeout_s)
            finally:
                self._slots.release()
        with self._session_lock(session):  # one call at a time per kernel, like a notebook
            return self._run_session(code, timeout_s, session)

    def _run_fresh(self, code: str, timeout_s: float) -> ExecResult:
        sbx = None
        try:
            sbx, result = self._attempts(code, timeout_s, None)
            return result
        finally:
            if sbx is not None:
                self._kill(sbx)

    def _run_session(self, code: str, timeout_s: float, session: str) -> ExecResult:
        with self._lock:
            sbx = self._sessions.get(session)
        if sbx is None:
            self._slots.acquire()  # released by close_session
        sbx, result = self._attempts(code, timeout_s, sbx)
        with self._lock:
            if sbx is None:
                self._sessions.pop(session, None)
            else:
                self._sessions[session] = sbx
        if sbx is None:
            self._slots.release()
        return result

    def _attempts(self, code: str, timeout_s: float, sbx: Any) -> tuple[Any, ExecResult]:
        """Run with retries. Returns the sandbox to keep (None when it was lost) and the result."""
        from e2b import TimeoutException

        start = time.monotonic()
        last = ""
        for attempt in range(1, self.cfg.retries + 2):
            try:
                if sbx is None:
                    sbx = self._create()
                t0 = time.monotonic()
                execution = sbx.run_code(code, timeout=timeout_s, request_timeout=self.cfg.e2b.request_timeout_s)
                result = execution_to_result(execution, self.cfg.max_capture_bytes, time.monotonic() - t0)
                result.attempts = attempt
                return sbx, result
            except TimeoutException as e:
                if str(e).startswith("Execution timed out"):  # the code's fault; 502s are transport
                    # the kernel may still be busy with the code: this sandbox is no longer usable
                    self._kill(sbx)
                    return None, ExecResult(
                        ExecKind.TIMEOUT, duration_s=time.monotonic() - start, attempts=attempt,
                        detail=f"killed after {timeout_s:g} s of wall-clock time; session restarted",
                    )
                last = f"{type(e).__name__}: {e}"
            except Exception as e:  # transport and API failures: not the model's fault
                last = f"{type(e).__name__}: {e}".splitlines()[0]
            if sbx is not None:
                self._kill(sbx)
                sbx = None
            time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
        return None, infra(f"e2b failed {self.cfg.retries + 1} times: {last}", self.cfg.retries + 1,
                           time.monotonic() - start)

    def close_session(self, session: str) -> None:
        with self._session_lock(session):
            with self._lock:
                sbx = self._sessions.pop(session, None)
                self._session_locks.pop(session, None)
            if sbx is not None:
                self._kill(sbx)
                self._slots.release()

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            self.close_session(s)
