"""The `local` backend: a pool of pre-started isolated workers, plus the `subprocess` fallback.

Thread-safe. Up to ``pool_size`` executions run at once; more wait for a free worker (none are dropped).
A worker that dies is replaced; the call that saw it die is an INFRA failure and is retried with backoff.
Stateful sessions are pinned to the worker that created them (their process is that worker's child).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from toolrl.config.schema import SandboxConfig
from toolrl.errors import SandboxUnavailableError
from toolrl.sandbox.base import ExecResult
from toolrl.sandbox.policy import Policy, pick_uid_base, policy_from_config, uid_block_size
from toolrl.sandbox.results import infra, result_from_dict
from toolrl.sandbox.workers import WorkerHandle, WorkerLost, WorkerRefused, kill_uids
from toolrl.types import ExecKind

_REPLY_MARGIN_S = 15.0  # how much longer than the code's own timeout a worker may take to answer
_WARNED: set[str] = set()

_HOW_TO = {
    "full": "run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces > 0; in Docker: --security-opt seccomp=unconfined); see docs/sandbox.md",
    "contained": "allow user namespaces (see docs/sandbox.md for Docker, Podman, Slurm, Kubernetes), or use a "
                 "kernel with Landlock (>= 5.13) and libseccomp; sandbox.backend=e2b runs the code remotely",
}


def refusal_error(report: dict[str, Any]) -> SandboxUnavailableError:
    prot = report.get("protections", {})
    if report.get("setup_error"):
        msg, _, hint = str(report["setup_error"]).partition("; ")
        return SandboxUnavailableError(f"sandbox set-up failed: {msg}", hint or "see docs/sandbox.md")
    if report.get("error"):
        return SandboxUnavailableError(
            f"sandbox worker could not start: {report['error']}", "check sandbox.preload (modules to import)"
        )
    missing = "; ".join(f"{k}: {v}" for k, v in prot.items() if not v.startswith(("ok", "not needed")))
    want = report.get("required", "contained")
    return SandboxUnavailableError(
        f"sandbox isolation on this host is '{report.get('level', 'none')}', below sandbox.isolation={want} "
        f"({missing})",
        f"{_HOW_TO.get(want, '')}; or accept less with sandbox.isolation="
        f"{'contained' if want == 'full' else 'none'}",
    )


def warn_missing(info: dict[str, Any]) -> None:
    """Say once, loudly, what this host does not give us (below full isolation)."""
    level = info.get("level", "none")
    if level == "full" or level in _WARNED:
        return
    _WARNED.add(level)
    off = ", ".join(f"{k} ({v})" for k, v in info.get("protections", {}).items() if v.startswith("off"))
    sys.stderr.write(f"toolrl sandbox: WARNING: isolation level '{level}' (not full); missing: {off}\n")


def _timeout_for(timeout_s: float) -> float:
    return timeout_s + _REPLY_MARGIN_S


class LocalSandbox:
    """Pre-started, warmed worker pool with per-execution isolation (see docs/sandbox.md)."""

    def __init__(self, cfg: SandboxConfig, *, cwd: str | None = None) -> None:
        self.cfg = cfg
        self.policy: Policy = policy_from_config(cfg, cwd)
        self.pool_size = max(1, cfg.pool_size)
        self.uid_base = pick_uid_base(cfg.uid_base)
        self.policy.uid_base = self.uid_base
        self.uids = range(self.uid_base, self.uid_base + uid_block_size())
        self._cond = threading.Condition()
        self._workers: list[WorkerHandle | None] = [None] * self.pool_size
        self._free: set[int] = set()
        self._queue: deque[object] = deque()  # tickets of waiting unpinned requests, oldest first
        self._sessions: dict[str, tuple[int, int]] = {}  # session -> (slot, uid)
        self._session_uids = list(range(self.uid_base + self.pool_size, self.uid_base + uid_block_size()))[::-1]
        self._closed = False
        self.protections: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.restarts = 0
        with ThreadPoolExecutor(self.pool_size) as ex:
            outcomes = list(ex.map(self._start_slot, range(self.pool_size)))
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            self.close()
            e = errors[0]
            if isinstance(e, WorkerRefused):
                raise refusal_error({**e.report, "required": self.policy.isolation}) from None
            raise SandboxUnavailableError(
                f"sandbox workers could not start: {e}", "set TOOLRL_SANDBOX_DEBUG=1 to see the workers' stderr"
            ) from None
        warn_missing(self.info)

    @property
    def level(self) -> str:
        return str(self.info.get("level", "none"))

    # -- pool --------------------------------------------------------------------------------------------
    def _start_slot(self, slot: int) -> BaseException | None:
        handle = WorkerHandle(self.policy)
        try:
            self.protections = handle.start(self.cfg.start_timeout_s)
            self.info = handle.info
        except (WorkerRefused, WorkerLost, OSError) as e:
            return e
        with self._cond:
            self._workers[slot] = handle
            self._free.add(slot)
            self._cond.notify_all()
        return None

    def _acquire(self, session: str | None) -> tuple[int, int]:
        """Block until a worker is free; returns (slot, uid to run as).

        Unpinned requests are served first come, first served: with a bare condition variable every release
        wakes all waiters and an unlucky one can lose the race again and again (seconds of p99 latency).
        """
        with self._cond:
            ticket: object | None = None
            try:
                while True:
                    if self._closed:
                        raise WorkerLost("sandbox is closed")
                    if session is not None and session in self._sessions:
                        slot, uid = self._sessions[session]
                        if slot in self._free:
                            self._free.discard(slot)
                            return slot, uid
                    else:
                        if ticket is None:
                            ticket = object()
                            self._queue.append(ticket)
                        if self._free and self._queue[0] is ticket:
                            self._queue.popleft()
                            ticket = None
                            taken = self._take_free_slot(session)
                            if self._free and self._queue:
                                self._cond.notify_all()  # the next in line may take another free worker
                            return taken
                    self._cond.wait()
            finally:
                if ticket is not None:  # left the queue without a worker (closed, interrupted)
                    self._queue.remove(ticket)
                    self._cond.notify_all()

    def _take_free_slot(self, session: str | None) -> tuple[int, int]:
        """Called with the lock held and a free slot: sessions go to the free worker holding the fewest."""
        load = {s: 0 for s in self._free}
        for s, _ in self._sessions.values():
            if s in load:
                load[s] += 1
        slot = min(self._free, key=lambda s: (load[s], s))
        self._free.discard(slot)
        if session is None:
            return slot, self.uid_base + slot
        uid = self._session_uids.pop()
        self._sessions[session] = (slot, uid)
        return slot, uid

    def _release(self, slot: int) -> None:
        with self._cond:
            self._free.add(slot)
            self._cond.notify_all()

    def _replace(self, slot: int) -> None:
        """Called with the slot held: kill the old worker and everything it ran, start a new one."""
        old = self._workers[slot]
        if old is not None:
            old.kill()
        with self._cond:
            lost = [s for s, (sl, _) in self._sessions.items() if sl == slot]
            uids = {self.uid_base + slot} | {self._sessions[s][1] for s in lost}
            for s in lost:
                self._session_uids.append(self._sessions.pop(s)[1])
        kill_uids(uids)  # its children may have outlived it
        self.restarts += 1
        handle = WorkerHandle(self.policy)
        try:
            handle.start(self.cfg.start_timeout_s)
            self._workers[slot] = handle
        except (WorkerRefused, WorkerLost, OSError):
            self._workers[slot] = None

    # -- Sandbox protocol --------------------------------------------------------------------------------
    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        if not self.cfg.stateful:
            session = None
        start = time.monotonic()
        attempts = 0
        last = "no attempt"
        while attempts <= self.cfg.retries:
            attempts += 1
            try:
                slot, uid = self._acquire(session)
            except WorkerLost as e:
                return infra(str(e), attempts, time.monotonic() - start)
            try:
                worker = self._workers[slot]
                if worker is None:
                    raise WorkerLost("worker could not be restarted")
                msg = {"op": "run", "code": code, "timeout": float(timeout_s), "uid": uid, "session": session}
                reply = worker.request(msg, _timeout_for(timeout_s))
                result = result_from_dict(reply)
                result.attempts = attempts
                if result.kind != ExecKind.INFRA or attempts > self.cfg.retries:
                    return result
                last = result.detail or "infrastructure failure"  # e.g. the child could not be locked down
            except WorkerLost as e:
                last = str(e)
                self._replace(slot)
            finally:
                self._release(slot)
            time.sleep(min(2.0, 0.1 * 2 ** (attempts - 1)))  # back off: a crash loop must not spin
        return infra(f"sandbox failed {attempts} times: {last}", attempts, time.monotonic() - start)

    def close_session(self, session: str) -> None:
        with self._cond:
            if session not in self._sessions:
                return
        try:
            slot, uid = self._acquire(session)
        except WorkerLost:
            return
        try:
            worker = self._workers[slot]
            if worker is not None:
                worker.request({"op": "close_session", "session": session}, _REPLY_MARGIN_S)
        except WorkerLost:
            self._replace(slot)
        finally:
            with self._cond:
                if self._sessions.pop(session, None) is not None:
                    self._session_uids.append(uid)
            self._release(slot)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for w in self._workers:
            if w is not None:
                w.stop()
        self._workers = [None] * self.pool_size
        kill_uids(self.uids)

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubprocessSandbox:
    """A fresh isolated interpreter per call (no pre-imports): the simple fallback, stateless."""

    def __init__(self, cfg: SandboxConfig, *, cwd: str | None = None) -> None:
        self.cfg = cfg
        self.policy = policy_from_config(cfg, cwd)
        self.policy.preload = []
        self.policy.stateful = False
        self.uid_base = pick_uid_base(cfg.uid_base)
        self.policy.uid_base = self.uid_base
        self.uids = range(self.uid_base, self.uid_base + uid_block_size())
        self._slots = list(range(max(1, cfg.pool_size)))
        self._cond = threading.Condition()
        probe = WorkerHandle(self.policy)  # fail now, not at the first rollout, if isolation is impossible
        try:
            self.protections = probe.start(cfg.start_timeout_s)
            self.info = probe.info
        except WorkerRefused as e:
            raise refusal_error({**e.report, "required": self.policy.isolation}) from None
        except (WorkerLost, OSError) as e:
            raise SandboxUnavailableError(f"sandbox process could not start: {e}", "set TOOLRL_SANDBOX_DEBUG=1") from None
        finally:
            probe.stop()
        warn_missing(self.info)

    @property
    def level(self) -> str:
        return str(self.info.get("level", "none"))

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        start = time.monotonic()
        with self._cond:
            while not self._slots:
                self._cond.wait()
            slot = self._slots.pop()
        try:
            last = ""
            for attempt in range(1, self.cfg.retries + 2):
                handle = WorkerHandle(self.policy)
                try:
                    handle.start(self.cfg.start_timeout_s)
                    msg = {"op": "run", "code": code, "timeout": float(timeout_s), "uid": self.uid_base + slot}
                    result = result_from_dict(handle.request(msg, _timeout_for(timeout_s)))
                    result.attempts = attempt
                    return result
                except (WorkerLost, WorkerRefused, OSError) as e:
                    last = str(e)
                    kill_uids({self.uid_base + slot})
                finally:
                    handle.stop()
                time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
            return infra(f"sandbox failed {self.cfg.retries + 1} times: {last}", self.cfg.retries + 1, time.monotonic() - start)
        finally:
            with self._cond:
                self._slots.append(slot)
                self._cond.notify()

    def close_session(self, session: str) -> None:
        return None

    def close(self) -> None:
        kill_uids(self.uids)
