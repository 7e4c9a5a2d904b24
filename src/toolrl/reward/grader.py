"""Answer comparison with a hard time limit that works from any thread.

math-verify bounds its own work with SIGALRM, which only works in a process's main thread, and rollouts grade
from worker threads. So symbolic checks run in a small pool of persistent grading processes: a request that
overruns its deadline gets its process killed (a new one starts on demand) and counts as not equal. Cheap
checks (identical strings, two integers) never leave this process, and verdicts are cached.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from toolrl.errors import ToolrlError
from toolrl.reward.equivalence import quick_verdict

_START_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine can take many seconds
_KILL_GRACE_S = 1.0  # the worker's own timer fires first; killing is for code no signal can interrupt
_CACHE_MAX = 100_000


class GradingError(ToolrlError):
    """The grading process could not start."""


class _Worker:
    def __init__(self) -> None:
        src_root = str(Path(__file__).resolve().parents[2])  # the directory holding the toolrl package
        env = dict(os.environ)
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolrl.reward._grade_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the CLI, which then closes the pool
        )
        self._next_id = 0
        line = self._read_line(time.monotonic() + _START_TIMEOUT_S)
        if line is None or not json.loads(line).get("ready"):
            self.kill()
            raise GradingError(
                "the answer-grading process did not start",
                "check that math-verify imports: python -c 'import math_verify'",
            )

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        line = self.proc.stdout.readline()  # replies are one short line written at once
        return line or None

    def compare(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """True/False, or None when the deadline passed or the process died (then it is unusable)."""
        assert self.proc.stdin is not None
        self._next_id += 1
        req = {"id": self._next_id, "pred": pred, "gold": gold, "timeout": timeout_s}
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(time.monotonic() + timeout_s + _KILL_GRACE_S)
        if line is None:
            return None
        reply = json.loads(line)
        if reply.get("status") == "timeout":
            return False
        return bool(reply["equal"])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@dataclass
class GraderStats:
    quick: int = 0  # decided by string checks alone
    cached: int = 0
    symbolic: int = 0  # sent to a grading process
    timeouts: int = 0  # deadline passed: counted as not equal
    restarts: int = 0


class Grader:
    """A thread-safe pool of ``size`` grading processes, started on first need."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self.stats = GraderStats()
        self._idle: list[_Worker] = []
        self._started = 0
        self._cond = threading.Condition()
        self._cache: dict[tuple[str, str], bool] = {}
        self._closed = False

    def equivalent(self, pred: str, gold: str, timeout_s: float = 5.0) -> bool:
        quick = quick_verdict(pred, gold)
        if quick is not None:
            self.stats.quick += 1
            return quick
        key = (pred, gold)
        with self._cond:
            if key in self._cache:
                self.stats.cached += 1
                return self._cache[key]
        worker = self._acquire()
        verdict: bool | None = None
        try:
            self.stats.symbolic += 1
            verdict = worker.compare(pred, gold, timeout_s)
        finally:
            self._release(worker, healthy=verdict is not None and worker.alive)
        if verdict is None:
            self.stats.timeouts += 1
            verdict = False
        with self._cond:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise GradingError("the grader was closed")
                if self._idle:
                    return self._idle.pop()
                if self._started < self.size:
                    self._started += 1
                    break
                self._cond.wait()
        try:  # start outside the lock: other threads keep using the warm workers meanwhile
            return _Worker()
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
            self.stats.restarts += 1
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._started -= 1
                if healthy:
                    worker.kill()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for w in idle:
            w.kill()


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The process-wide grader (closed at exit)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Grader(size=min(2, os.cpu_count() or 1))
            atexit.register(_default.close)
        return _default
