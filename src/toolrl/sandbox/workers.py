"""Parent side of a worker process: start it, send requests with a deadline, kill it and everything it ran."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from toolrl.sandbox import protocol
from toolrl.sandbox.policy import Policy

_BOOT = "from toolrl.sandbox.worker import main; main()"
_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerLost(RuntimeError):
    """The worker died, hung or broke the protocol: an infrastructure failure."""


class WorkerRefused(RuntimeError):
    """The worker started but refused to serve (a protection is missing, or a preload failed)."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(str(report))
        self.report = report


def worker_env() -> dict[str, str]:
    """The worker's environment: nothing secret, since every child is a copy of the worker."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": _SRC,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
    }
    if os.environ.get("TOOLRL_SANDBOX_DEBUG"):
        env["TOOLRL_SANDBOX_DEBUG"] = "1"
    return env


class WorkerHandle:
    """One worker process. Not thread-safe: the pool hands a worker to one thread at a time."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.protections: dict[str, str] = {}
        self.info: dict[str, Any] = {}

    def start(self, timeout_s: float) -> dict[str, str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, self.policy.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=worker_env(),
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach workers mid-execution
            cwd="/",
        )
        reply = self._recv(timeout_s, what="start")
        self.protections = reply.get("protections", {})
        self.info = reply
        if not reply.get("ready"):
            self.kill()
            raise WorkerRefused(reply)
        return self.protections

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def request(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise WorkerLost("worker is not running")
        try:
            protocol.send(self.proc.stdin.fileno(), msg)  # type: ignore[union-attr]
        except OSError as e:
            self.kill()
            raise WorkerLost(f"worker pipe broken: {e}") from None
        return self._recv(timeout_s, what=str(msg.get("op")))

    def _recv(self, timeout_s: float, what: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            self.kill()
            raise WorkerLost(f"worker did not answer '{what}' within {timeout_s:.0f} s")
        try:
            return protocol.recv(fd)
        except (protocol.ChannelClosed, OSError, ValueError) as e:
            code = self.kill()
            raise WorkerLost(f"worker died during '{what}' (exit status {code}): {e}") from None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None:
            return
        try:
            protocol.send(self.proc.stdin.fileno(), {"op": "exit"})  # type: ignore[union-attr]
            self.proc.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        return code


def procs_of_uids(uids: range | set[int]) -> list[int]:
    """Pids whose real uid is in ``uids`` (a /proc scan; no psutil)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) in uids:
                            found.append(int(name))
                        break
        except (OSError, ValueError):
            continue
    return found


def kill_uids(uids: range | set[int], rounds: int = 50) -> int:
    """SIGKILL every process of these uids until none is left (a dead worker's orphans). Returns how many."""
    killed = 0
    for _ in range(rounds):
        pids = procs_of_uids(uids)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    return killed
