"""A local-sandbox worker: a pre-started Python that already imported the usual libraries and forks one
isolated child per execution (or keeps one long-lived child per stateful session).

Started by the parent as ``python -c 'from toolrl.sandbox.worker import main; main()' POLICY_JSON``; talks
over its stdin/stdout with :mod:`toolrl.sandbox.protocol`. Set up once per worker: network, mount, UTS and
IPC namespaces, hidden directories, a /proc that shows each uid only its own processes. Per execution: a new
PID namespace (killing its first process kills every process the code started, double-forked ones
included), setsid, rlimits, an unprivileged per-slot uid, a private working directory, an empty environment.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from toolrl.sandbox import child, linux, protocol
from toolrl.sandbox.policy import Policy
from toolrl.sandbox.results import Capture, last_line

_SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable after hiding; wiped per uid
_SESSION_GRACE_S = 0.5  # after a session timeout: SIGINT, then this long before SIGKILL


def _setup_namespaces(policy: Policy) -> dict[str, str]:
    """Try every protection; return name -> "ok" or the reason it is unavailable."""
    report: dict[str, str] = {}

    def attempt(name: str, fn: Any) -> None:
        try:
            fn()
            report[name] = "ok"
        except OSError as e:
            report[name] = e.strerror or str(e)

    attempt("netns", lambda: linux.unshare(linux.CLONE_NEWNET))
    try:
        linux.unshare(linux.CLONE_NEWUTS | linux.CLONE_NEWIPC)
        linux.set_hostname("sandbox")
    except OSError:
        pass  # cosmetic: hostname and SysV IPC isolation
    attempt("mountns", lambda: _hide_paths(policy))
    if report["mountns"] == "ok":
        try:  # each uid sees only its own processes in /proc
            linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, "hidepid=2")
            report["hidepid"] = "ok"
        except OSError as e:
            report["hidepid"] = e.strerror or str(e)
    attempt("pidns", _probe_pidns)
    report["uid"] = "ok" if os.geteuid() == 0 else "not running as root: cannot switch to an unprivileged uid"
    report["rlimits"] = "ok"
    try:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to us if there is no PID namespace
    except OSError:
        pass
    return report


def _hide_paths(policy: Policy) -> None:
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing we do leaks to the host
    hidden = [p for p in policy.hide_paths if os.path.isdir(p) and p != "/"]
    hidden = [p for p in hidden if not any(p != q and p.startswith(q + os.sep) for q in hidden)]
    inside = [e for e in policy.expose_paths if any(e == h or e.startswith(h + os.sep) for h in hidden)]
    trees = {e: linux.clone_tree(e) for e in inside}  # grab them before they are covered
    for p in hidden:
        mode = "1777" if p in _SHARED_TMP else "755"
        linux.mount("tmpfs", p, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"size={policy.tmpfs_mb}m,mode={mode}")
    for e, fd in trees.items():
        os.makedirs(e, exist_ok=True)
        linux.attach_tree(fd, e)
        os.close(fd)


_OWN_PIDNS: int | None = None


def _probe_pidns() -> None:
    global _OWN_PIDNS
    _OWN_PIDNS = os.open("/proc/self/ns/pid", os.O_RDONLY)
    linux.unshare(linux.CLONE_NEWPID)
    linux.setns(_OWN_PIDNS, linux.CLONE_NEWPID)


def _warm(preload: list[str]) -> None:
    for name in preload:
        importlib.import_module(name)
    if "sympy" in sys.modules:  # first solve builds caches every later execution reuses
        import sympy

        x = sympy.Symbol("x")
        sympy.solve(x**2 - 2 * x - 3, x)
        sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
    if "numpy" in sys.modules:
        import numpy
        import numpy.random  # lazily imported by numpy; paid once here instead of per execution

        numpy.linalg.solve(numpy.eye(3), numpy.ones(3)).sum()


@dataclass
class _Proc:
    """One forked sandbox child and the pipe ends the worker keeps."""

    pid: int
    pidfd: int
    uid: int | None
    cwd: str
    out: int
    err: int
    status: int
    request: int | None = None  # sessions only
    status_buf: bytearray = field(default_factory=bytearray)


class Worker:
    def __init__(self, policy: Policy, report: dict[str, str]) -> None:
        self.policy = policy
        self.use_pidns = report.get("pidns") == "ok"
        self.use_uid = report.get("uid") == "ok"
        self.sessions: dict[str, _Proc] = {}
        self.counter = 0
        self.root = "/tmp/.homes" if report.get("mountns") == "ok" else f"/tmp/toolrl-sbx-{os.getpid()}"
        os.makedirs(self.root, exist_ok=True)

    # -- process lifecycle -------------------------------------------------------------------------------
    def _spawn(self, uid: int | None, code: str | None) -> _Proc:
        self.counter += 1
        cwd = os.path.join(self.root, f"home-{uid if code is not None else f's{self.counter}'}")
        if not os.path.isdir(cwd):  # a slot's directory is reused (emptied after each run): mkdir costs
            os.mkdir(cwd, 0o700)
            if uid is not None and self.use_uid:
                os.chown(cwd, uid, uid)
        pipes = [os.pipe() for _ in range(4 if code is None else 3)]
        if self.use_pidns:
            linux.unshare(linux.CLONE_NEWPID)  # the next child is PID 1 of a fresh namespace
        pid = os.fork()
        if pid == 0:
            try:
                fds = {1: pipes[0][1], 2: pipes[1][1], child.STATUS_FD: pipes[2][1]}
                if code is None:
                    fds[child.REQUEST_FD] = pipes[3][0]
                child.lock_down(self.policy, uid=uid if self.use_uid else None, cwd=cwd, fds=fds)
                child.run_once(code) if code is not None else child.serve_session()
            finally:
                os._exit(70)
        if self.use_pidns:
            linux.setns(_OWN_PIDNS, linux.CLONE_NEWPID)  # so the next unshare is allowed again
        os.close(pipes[0][1])
        os.close(pipes[1][1])
        os.close(pipes[2][1])
        request = None
        if code is None:
            os.close(pipes[3][0])
            request = pipes[3][1]
        for fd in (pipes[0][0], pipes[1][0], pipes[2][0]):
            os.set_blocking(fd, False)
        return _Proc(pid, os.pidfd_open(pid), uid, cwd, pipes[0][0], pipes[1][0], pipes[2][0], request)

    def _kill(self, proc: _Proc) -> None:
        try:
            os.kill(proc.pid, signal.SIGKILL)  # PID 1 of its namespace: the kernel kills the rest
            if not self.use_pidns:
                os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap(self, proc: _Proc) -> tuple[int, float]:
        """Wait for the child; clean up everything it left. Returns (wait status, CPU seconds)."""
        _, st, ru = os.wait4(proc.pid, 0)
        if not self.use_pidns and proc.uid is not None and self.use_uid:
            _kill_uid(proc.uid)
        while True:  # zombies of orphans that came back to us (subreaper)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        for fd in (proc.out, proc.err, proc.status, proc.pidfd, proc.request):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if proc.request is not None:
            shutil.rmtree(proc.cwd, ignore_errors=True)
        else:
            _empty_dir(proc.cwd)
        if proc.uid is not None:
            _wipe_shared_tmp(proc.uid)
        return st, ru.ru_utime + ru.ru_stime

    # -- supervision -------------------------------------------------------------------------------------
    def _watch(self, proc: _Proc, timeout: float, *, until_status: bool) -> dict[str, Any]:
        """Collect output until the child exits (or, for sessions, reports a status) or the time is up."""
        out, err = Capture(self.policy.max_capture_bytes), Capture(self.policy.max_capture_bytes)
        poller = select.poll()
        for fd in (proc.out, proc.err, proc.status, proc.pidfd):
            poller.register(fd, select.POLLIN)
        open_fds = {proc.out, proc.err, proc.status}
        start = time.monotonic()
        deadline = start + timeout
        timed_out = interrupted = exited = False
        status: dict[str, Any] | None = None
        while True:
            now = time.monotonic()
            if now >= deadline and not exited:
                if until_status and not interrupted:
                    os.kill(proc.pid, signal.SIGINT)  # like a notebook's interrupt: state survives if it stops
                    interrupted = True
                    deadline = now + _SESSION_GRACE_S
                    continue
                if not timed_out:
                    timed_out = True
                    self._kill(proc)
                    deadline = now + 5.0
                else:
                    break  # cannot happen with a PID namespace; do not hang the worker
            for fd, _ev in poller.poll(max(0.0, deadline - now) * 1000 + 1):
                if fd == proc.pidfd:
                    exited = True
                    poller.unregister(fd)
                    continue
                data = _read_some(fd)
                if data is None:
                    continue
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd == proc.out:
                    out.add(data)
                elif fd == proc.err:
                    err.add(data)
                else:
                    proc.status_buf += data
                    status = _parse_status(proc.status_buf) if until_status else None
            if exited or (until_status and status is not None):
                break
        for fd in list(open_fds):  # what is already in the pipes belongs to this execution
            while (data := _read_some(fd)):
                (out if fd == proc.out else err if fd == proc.err else _Sink(proc.status_buf)).add(data)
        if status is None:
            status = _parse_status(proc.status_buf)
        proc.status_buf.clear()
        return {
            "out": out, "err": err, "status": status, "exited": exited, "timed_out": timed_out,
            "interrupted": interrupted, "duration": time.monotonic() - start, "timeout": timeout,
        }

    def run(self, code: str, timeout: float, uid: int | None) -> dict[str, Any]:
        proc = self._spawn(uid, code)
        w = self._watch(proc, timeout, until_status=False)
        st, cpu = self._reap(proc)
        return _verdict(w, st, cpu, self.policy)

    def run_session(self, session: str, code: str, timeout: float, uid: int | None) -> dict[str, Any]:
        proc = self.sessions.get(session)
        fresh = proc is None
        if proc is None:
            proc = self.sessions[session] = self._spawn(uid, None)
        try:
            protocol.send(proc.request, {"code": code})
        except OSError:
            pass  # the session died between calls; _watch sees the exit
        w = self._watch(proc, timeout, until_status=True)
        if w["exited"] or w["timed_out"]:
            st, cpu = self._reap(proc)
            del self.sessions[session]
            result = _verdict(w, st, cpu, self.policy)
            result["detail"] = (result.get("detail") or "") + "; session restarted: earlier variables are gone"
            return result
        result = _verdict(w, None, 0.0, self.policy)
        if fresh:
            result["new_session"] = True
        return result

    def close_session(self, session: str) -> None:
        proc = self.sessions.pop(session, None)
        if proc is not None:
            self._kill(proc)
            self._reap(proc)

    def close_all(self) -> None:
        for s in list(self.sessions):
            self.close_session(s)


class _Sink:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def add(self, data: bytes) -> None:
        self.buf += data


def _read_some(fd: int) -> bytes | None:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _parse_status(buf: bytearray) -> dict[str, Any] | None:
    if len(buf) < 4:
        return None
    n = int.from_bytes(buf[:4], "big")
    if len(buf) < 4 + n:
        return None
    try:
        import json

        msg = json.loads(bytes(buf[4 : 4 + n]))
        return msg if isinstance(msg, dict) else None
    except ValueError:
        return None
    finally:
        del buf[: 4 + n]


def _verdict(w: dict[str, Any], wait_status: int | None, cpu: float, policy: Policy) -> dict[str, Any]:
    """Decide the result kind. The worker's own evidence (timer, exit status) wins over the child's report."""
    out, err, status = w["out"], w["err"], w["status"] or {}
    r: dict[str, Any] = {
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.truncated or err.truncated,
        "duration_s": w["duration"],
    }
    if w["timed_out"] or (w["interrupted"] and not w["exited"]):
        r.update(kind="timeout", detail=f"killed after {w['timeout']:g} s of wall-clock time")
        if w["interrupted"] and not w["timed_out"]:
            r["detail"] = f"interrupted after {w['timeout']:g} s of wall-clock time; session state kept"
            r["stderr"] = ""
        return r
    if wait_status is not None and os.WIFSIGNALED(wait_status) and not status:
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= policy.cpu_s - 0.5):
            r.update(kind="timeout", detail=f"CPU limit of {policy.cpu_s} s reached")
        elif sig == signal.SIGXFSZ:
            r.update(kind="resource_limit", detail="file size limit reached")
        elif sig == signal.SIGKILL:
            r.update(kind="resource_limit", detail="killed by the kernel (out of memory?)")
        else:
            name = signal.Signals(sig).name
            r.update(kind="error", error_name=name, error_line=f"process killed by signal {name}")
        return r
    if status:
        r["kind"] = status.get("kind", "error")
        for key in ("error_name", "error_line", "detail"):
            if status.get(key):
                r[key] = status[key]
        if r["kind"] != "ok" and not r.get("error_line"):
            r["error_line"] = last_line(r["stderr"])
        return r
    code = os.WEXITSTATUS(wait_status) if wait_status is not None and os.WIFEXITED(wait_status) else -1
    if code == 0:
        r["kind"] = "ok"
    else:
        r.update(kind="error", error_name="SystemExit", error_line=last_line(r["stderr"]) or f"exit status {code}")
    return r


def _kill_uid(uid: int) -> None:
    """Without a PID namespace: kill every process of ``uid`` (kill(-1) as that uid reaches exactly those)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _empty_dir(path: str) -> None:
    try:
        os.chmod(path, 0o700)  # the code may have changed it
        with os.scandir(path) as it:
            entries = list(it)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    for e in entries:
        _remove_entry(e)


def _remove_entry(e: os.DirEntry) -> None:
    if e.is_dir(follow_symlinks=False):
        shutil.rmtree(e.path, ignore_errors=True)
    else:
        try:
            os.unlink(e.path)
        except OSError:
            pass


def _wipe_shared_tmp(uid: int) -> None:
    for d in _SHARED_TMP:
        try:
            with os.scandir(d) as it:
                entries = [e for e in it if e.stat(follow_symlinks=False).st_uid == uid]
        except OSError:
            continue
        for e in entries:
            _remove_entry(e)


def main() -> None:
    cin, cout = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # a stray print in this process must not corrupt the protocol
    if not os.environ.get("TOOLRL_SANDBOX_DEBUG"):
        os.dup2(null, 2)
    policy = Policy.from_json(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the parent's business
    report = _setup_namespaces(policy)
    missing = {k: v for k, v in report.items() if v != "ok" and k in ("netns", "mountns", "pidns", "uid")}
    if missing and policy.require_isolation:
        protocol.send(cout, {"ready": False, "protections": report})
        return
    try:
        _warm(policy.preload)
    except Exception as e:  # a bad preload name is a configuration problem the parent reports
        protocol.send(cout, {"ready": False, "protections": report, "error": f"{type(e).__name__}: {e}"})
        return
    worker = Worker(policy, report)
    gc.collect()
    gc.freeze()  # children's garbage collector must not walk (and so copy) every pre-imported object
    protocol.send(cout, {"ready": True, "protections": report, "pid": os.getpid()})
    while True:
        try:
            msg = protocol.recv(cin)
        except protocol.ChannelClosed:
            break
        op = msg.get("op")
        if op == "run":
            if msg.get("session") is not None:
                reply = worker.run_session(msg["session"], msg["code"], msg["timeout"], msg.get("uid"))
            else:
                reply = worker.run(msg["code"], msg["timeout"], msg.get("uid"))
        elif op == "close_session":
            worker.close_session(msg["session"])
            reply = {"ok": True}
        elif op == "exit":
            break
        else:
            reply = {"kind": "infra_error", "detail": f"unknown op {op!r}"}
        protocol.send(cout, reply)
    worker.close_all()
