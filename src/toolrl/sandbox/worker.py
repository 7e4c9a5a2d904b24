"""A local-sandbox worker: a pre-started Python that already imported the usual libraries and forks one
isolated child per execution (or keeps one long-lived child per stateful session).

Started by the parent as ``python -c 'from toolrl.sandbox.worker import main; main()' POLICY_JSON``; talks
over its stdin/stdout with :mod:`toolrl.sandbox.protocol`. Set up once per worker, the strongest the host
allows: network, mount, UTS and IPC namespaces (as root, or inside an unprivileged user namespace) and the
allowlist view of the filesystem (:mod:`toolrl.sandbox.view`); the seccomp filter is compiled here once.
Per execution: a new PID namespace and a private mount namespace with its own /tmp and /proc, or, without
namespaces, Landlock over a private directory; then setsid, rlimits, an unprivileged uid or no capabilities,
no_new_privs and seccomp (:mod:`toolrl.sandbox.child`). The level reached is reported to the parent, which
refuses to run below ``sandbox.isolation``.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from toolrl.sandbox import child, landlock, linux, protocol, view
from toolrl.sandbox.policy import Policy, level_of, meets
from toolrl.sandbox.results import Capture, last_line

_SESSION_GRACE_S = 0.5
_DU_EVERY_S = 0.05  # fallback mode: how often the private directory's size is checked  # after a session timeout: SIGINT, then this long before SIGKILL


class _SetupBroken(RuntimeError):
    """Set-up left the worker in a state where nothing is safe to run."""


class _Setup:
    """What the worker got from the host: layer name -> "ok ..." or why not, plus how uids work."""

    def __init__(self) -> None:
        self.layers: dict[str, str] = {}
        self.uid_mode = "none"  # host (root), range (user namespace maps a block), single (only our uid)
        self.seccomp: bytes | None = None
        self.landlock_abi = 0


def _setup(policy: Policy) -> _Setup:
    """Try every layer, strongest first; never raise (what is missing is reported, the level decides)."""
    s = _Setup()
    try:  # compiled before the view hides the library files
        from toolrl.sandbox import seccomp

        s.seccomp = seccomp.compile_filter()
        s.layers["seccomp"] = "ok"
    except (ImportError, OSError, RuntimeError, ValueError) as e:
        s.layers["seccomp"] = f"off: {e}"
    root_admin = os.geteuid() == 0 and linux.has_capability(linux.CAP_SYS_ADMIN)
    ns_ok = False
    if not policy.namespaces:
        for name in ("userns", "netns", "view", "pidns"):
            s.layers[name] = "off: sandbox.namespaces=false"
    elif root_admin:
        s.layers["userns"] = "not needed (root)"
        try:
            linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC)
            s.uid_mode = "host"
            ns_ok = True
        except OSError as e:
            s.layers["netns"] = f"off: {e.strerror}"
    else:
        try:
            s.uid_mode = _enter_userns(policy)
            s.layers["userns"] = "ok (uid block mapped)" if s.uid_mode == "range" else "ok (only your own uid)"
            ns_ok = True
        except OSError as e:
            s.layers["userns"] = f"off: {e.strerror or e}"
            s.layers["netns"] = "off: needs root or a user namespace"
    if ns_ok:
        s.layers["netns"] = "ok"
        try:
            linux.set_hostname("sandbox")
        except OSError:
            pass  # cosmetic
        try:
            view.build_root(policy)
            s.layers["view"] = "ok"
        except OSError as e:
            s.layers["view"] = f"off: {e.strerror or e}"
        try:
            _probe_pidns(s.uid_mode)
            s.layers["pidns"] = "ok"
        except OSError as e:
            s.layers["pidns"] = f"off: {e.strerror or e}"
    else:
        s.layers.setdefault("view", "off: needs a mount namespace")
        s.layers.setdefault("pidns", "off: needs a PID namespace")
    if s.uid_mode == "none" and os.geteuid() == 0 and linux.has_capability(linux.CAP_SETUID):
        s.uid_mode = "host"  # root without CAP_SYS_ADMIN can still switch uids
    s.layers["uid"] = {
        "host": "ok (one uid per slot)", "range": "ok (one uid per slot, mapped)",
        "single": "shared: one uid for all executions (kept apart by PID and mount namespaces)",
        "none": "shared: your own uid (kept apart by Landlock and rlimits)",
    }[s.uid_mode]
    s.landlock_abi = landlock.abi_version()
    if s.layers.get("view") == "ok":
        s.layers["landlock"] = f"not needed (mount view){'; ABI %d available' % s.landlock_abi if s.landlock_abi else ''}"
    elif s.landlock_abi:
        s.layers["landlock"] = f"ok (ABI {s.landlock_abi})"
    else:
        s.layers["landlock"] = "off: kernel without Landlock"
    s.layers["rlimits"] = "ok"
    s.layers["no_new_privs"] = "ok"
    try:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to us if there is no PID namespace
    except OSError:
        pass
    return s


def _enter_userns(policy: Policy) -> str:
    """New user, network, mount, UTS, IPC and PID namespaces without privilege; this process then lives on as
    PID 1 of the new PID namespace (the process that started stays outside, waiting). Returns the uid mode.

    The maps are written by a helper still outside the namespace: only there can host root (CAP_SETUID)
    map a whole block of uids; an unprivileged user maps just itself.
    """
    uid, gid = os.geteuid(), os.getegid()
    ranged = uid == 0 and policy.uid_base > 0 and linux.has_capability(linux.CAP_SETUID)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # never returns: a helper that escaped into the worker's code would serve requests too
        status = 1
        try:
            os.close(go_w)
            os.close(done_r)
            if os.read(go_r, 1) == b"x":
                target = os.getppid()
                block = f"{policy.uid_base} {policy.uid_base} {policy.uid_count}\n" if ranged else ""
                if not ranged:
                    with open(f"/proc/{target}/setgroups", "w") as f:
                        f.write("deny")
                with open(f"/proc/{target}/uid_map", "w") as f:
                    f.write(f"0 {uid} 1\n{block}")
                with open(f"/proc/{target}/gid_map", "w") as f:
                    f.write(f"0 {gid} 1\n{block}")
                status = 0
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            try:
                os.write(done_w, bytes([status]))
            except BaseException:  # noqa: BLE001 - the worker gave up on us
                pass
            os._exit(status)
    os.close(go_r)
    os.close(done_w)
    try:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET | linux.CLONE_NEWNS | linux.CLONE_NEWUTS
                      | linux.CLONE_NEWIPC | linux.CLONE_NEWPID)
        os.write(go_w, b"x")
        ok = os.read(done_r, 1) == b"\0"
    finally:
        os.close(go_w)
        os.close(done_r)
        os.waitpid(helper, 0)
    if not ok:  # inside a namespace with nobody's uid: no layer below could work, stop here
        raise _SetupBroken("the user namespace was created but its uid/gid maps could not be written; "
                           "set sandbox.namespaces=false to use seccomp and Landlock only")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    global _FORKED_INTO_PIDNS
    _FORKED_INTO_PIDNS = True
    return "range" if ranged else "single"


_OWN_PIDNS: int | None = None
_FORKED_INTO_PIDNS = False


def _probe_pidns(uid_mode: str) -> None:
    """Check that every execution can get a fresh PID namespace (unshare, then setns back to ours)."""
    global _OWN_PIDNS
    if _FORKED_INTO_PIDNS:
        _become_pid1()
    _OWN_PIDNS = os.open("/proc/self/ns/pid", os.O_RDONLY)
    linux.unshare(linux.CLONE_NEWPID)
    linux.setns(_OWN_PIDNS, linux.CLONE_NEWPID)


def _become_pid1() -> None:
    """In a user namespace we may only return (setns) to a PID namespace that namespace owns: move the
    worker into one as its PID 1. The original process waits outside and exits with it; if it is killed,
    the worker gets SIGKILL (and, being PID 1, takes every execution with it)."""
    pid = os.fork()
    if pid:
        for fd in (_CHANNEL_FDS or []):
            os.close(fd)  # the parent must see EOF when the worker dies
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)


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
    def __init__(self, policy: Policy, setup: _Setup) -> None:
        self.policy = policy
        self.setup = setup
        self.use_pidns = setup.layers.get("pidns") == "ok"
        self.use_view = setup.layers.get("view") == "ok"
        self.use_uid = setup.uid_mode in ("host", "range")
        self.sessions: dict[str, _Proc] = {}
        self.counter = 0
        self.root = "" if self.use_view else _private_root()

    # -- process lifecycle -------------------------------------------------------------------------------
    def _spawn(self, uid: int | None, code: str | None) -> _Proc:
        self.counter += 1
        uid = uid if self.use_uid else None
        if self.use_view:
            cwd = "/tmp"  # a fresh tmpfs the child mounts in its own mount namespace
        else:
            cwd = os.path.join(self.root, f"home-{uid if code is not None else f's{self.counter}'}")
            if not os.path.isdir(cwd):  # a slot's directory is reused (emptied after each run): mkdir costs
                os.mkdir(cwd, 0o700)
                if uid is not None:
                    os.chown(cwd, uid, uid)
        nproc = None
        if uid is None:  # the process limit counts every process of the uid: ours (fallback) or the worker's
            nproc = self.policy.max_processes + (4 if self.use_pidns else _tasks_of(os.getuid()))
        pipes = [os.pipe() for _ in range(4 if code is None else 3)]
        if self.use_pidns:
            linux.unshare(linux.CLONE_NEWPID)  # the next child is PID 1 of a fresh namespace
        pid = os.fork()
        if pid == 0:
            try:
                fds = {1: pipes[0][1], 2: pipes[1][1], child.STATUS_FD: pipes[2][1]}
                if code is None:
                    fds[child.REQUEST_FD] = pipes[3][0]
                try:
                    child.lock_down(self.policy, self._lock(uid, cwd, nproc), fds=fds)
                except BaseException as e:  # noqa: BLE001 - the sandbox's failure, never the code's
                    child.write_status({"kind": "infra_error", "detail": f"sandbox lock-down failed: {e!r}"})
                    os._exit(71)
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

    def _lock(self, uid: int | None, cwd: str, nproc: int | None) -> child.Lock:
        s = self.setup
        return child.Lock(
            uid=uid, cwd=cwd, view=self.use_view, own_pidns=self.use_pidns,
            drop_caps=s.uid_mode in ("single", "range") and uid is None,
            seccomp=s.seccomp,
            landlock_abi=0 if self.use_view else s.landlock_abi,
            nproc=nproc,
            keep_dac_read=uid is not None and not self.use_view and not _world_reachable(self.policy.read_only),
        )

    def _kill(self, proc: _Proc) -> None:
        try:
            os.kill(proc.pid, signal.SIGKILL)  # PID 1 of its namespace: the kernel kills the rest
            if not self.use_pidns:
                os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap(self, proc: _Proc) -> tuple[int, float]:
        """Wait for the child; clean up everything it left. Returns (wait status, CPU seconds)."""
        try:
            _, st, ru = os.wait4(proc.pid, 0)
            cpu = ru.ru_utime + ru.ru_stime
        except ChildProcessError:  # already reaped with the orphans below
            st, cpu = 0, 0.0
        if not self.use_pidns:
            self._kill_strays()
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
        if not self.use_view:  # with the view, the execution's tmpfs died with its mount namespace
            if proc.request is not None:
                shutil.rmtree(proc.cwd, ignore_errors=True)
            else:
                _empty_dir(proc.cwd)
        return st, cpu

    def _kill_strays(self) -> None:
        """Without PID namespaces: every process an execution left behind came back to us (we are its
        subreaper, so none can leave the tree); kill all our children except live sessions until none is left.
        Cheaper than killing by uid, which needs a fork of this (large) process."""
        keep = {p.pid for p in self.sessions.values()}
        for _ in range(50):
            strays = [p for p in _children(os.getpid()) if p not in keep]
            if not strays:
                return
            for p in strays:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for p in strays:
                try:
                    os.waitpid(p, 0)
                except ChildProcessError:
                    pass

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
        timed_out = interrupted = exited = over_quota = False
        status: dict[str, Any] | None = None
        quota = None if self.use_view else self.policy.tmpfs_mb * 1024 * 1024  # a tmpfs bounds itself
        next_du = start
        while True:
            now = time.monotonic()
            if quota is not None and now >= next_du and not exited and not timed_out:
                next_du = now + _DU_EVERY_S  # without a mount namespace the private directory is on the host disk
                if _du(proc.cwd) > quota:
                    over_quota = timed_out = True
                    self._kill(proc)
                    deadline = now + 5.0
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
            wait = max(0.0, deadline - now) if quota is None else min(max(0.0, deadline - now), _DU_EVERY_S)
            for fd, _ev in poller.poll(wait * 1000 + 1):
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
            "over_quota": over_quota,
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
    if w.get("over_quota"):
        r.update(kind="resource_limit", detail=f"disk space limit of {policy.tmpfs_mb} MB reached")
        return r
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
        for key in ("error_name", "error_line", "detail", "lock_us"):
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


def _private_root() -> str:
    """Where executions get their private directories when there is no mount namespace (0700, ours)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(base, f"toolrl-sbx-{os.getpid()}")
    os.makedirs(path, mode=0o711, exist_ok=True)
    return path


def _du(path: str) -> int:
    """Bytes allocated below ``path`` (symlinks not followed; stops counting past 1 TB of work)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return total


def _world_reachable(paths: list[str]) -> bool:
    """Whether another uid may walk to every allowlisted path (e.g. not an interpreter under /root)."""
    for path in paths:
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            try:
                st = os.stat("/" + "/".join(parts[: i + 1]))
                if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


_TASKS_CACHE: dict[int, tuple[float, int]] = {}


def _tasks_of(uid: int, max_age_s: float = 1.0) -> int:
    """Processes and threads of ``uid`` (what RLIMIT_NPROC counts); a /proc scan, reused for a second."""
    cached = _TASKS_CACHE.get(uid)
    if cached and time.monotonic() - cached[0] < max_age_s:
        return cached[1]
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = os.stat(f"/proc/{name}")
                if st.st_uid == uid:
                    n += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                continue
    _TASKS_CACHE[uid] = (time.monotonic(), n)
    return n


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


_CHANNEL_FDS: list[int] = []


def main() -> None:
    cin, cout = os.dup(0), os.dup(1)
    _CHANNEL_FDS.extend((cin, cout))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # a stray print in this process must not corrupt the protocol
    if not os.environ.get("TOOLRL_SANDBOX_DEBUG"):
        os.dup2(null, 2)
    os.close(null)
    policy = Policy.from_json(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the parent's business
    try:
        setup = _setup(policy)
    except _SetupBroken as e:
        protocol.send(cout, {"ready": False, "protections": {}, "level": "none", "setup_error": str(e)})
        return
    level = level_of(setup.layers)
    info = {"protections": setup.layers, "level": level, "uid_mode": setup.uid_mode}
    if not meets(level, policy.isolation):
        protocol.send(cout, {"ready": False, **info})
        return
    try:
        _warm(policy.preload)
    except Exception as e:  # a bad preload name is a configuration problem the parent reports
        protocol.send(cout, {"ready": False, **info, "error": f"{type(e).__name__}: {e}"})
        return
    worker = Worker(policy, setup)
    gc.collect()
    gc.freeze()  # children's garbage collector must not walk (and so copy) every pre-imported object
    protocol.send(cout, {"ready": True, **info, "pid": os.getpid()})
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
