"""Runs inside the forked child: lock the process down, then run the model's code and report how it ended.

Everything here happens after fork() in a copy of a pre-started worker, so imports are already paid for.
The status written to fd 3 only labels the code's own outcome; the worker trusts exit status and its own
timer over it (the code could write to fd 3 itself, which only mislabels its own failure).
"""

from __future__ import annotations

import ast
import builtins
import errno
import io
import linecache
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from toolrl.sandbox import landlock, linux, view
from toolrl.sandbox.policy import DEVICES, Policy

STATUS_FD = 3
REQUEST_FD = 4  # stateful sessions only: code arrives here

_MB = 1024 * 1024


def _vm_size_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _env(cwd: str) -> dict[str, str]:
    # No secret the parent holds reaches the code: a fixed, minimal environment.
    return {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "USER": "sandbox",
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


@dataclass
class Lock:
    """How to lock one child down: decided by the worker from what the host allowed."""

    uid: int | None  # switch to this uid (root, or a mapped block of a user namespace)
    cwd: str
    view: bool  # running inside the allowlist view: mount a private /tmp and /proc
    own_pidns: bool
    drop_caps: bool  # stays uid 0 of a user namespace: give up every capability instead
    seccomp: bytes | None
    landlock_abi: int  # > 0: no mount view, Landlock enforces the allowlist
    nproc: int | None = None  # process limit when it must count the user's other processes too
    keep_dac_read: bool = False  # the interpreter is not world-readable: keep CAP_DAC_READ_SEARCH (Landlock rules)


LOCK_US: dict[str, float] = {}  # microseconds each layer took in this child (reported with the status)


def lock_down(policy: Policy, lock: Lock, *, fds: dict[int, int]) -> None:
    """Turn this freshly forked process into the sandbox. ``fds`` maps target fd -> current fd.

    Order matters: mounts need privileges, so they come first; then the uid/capability drop, no_new_privs,
    Landlock and finally seccomp (which forbids the calls the earlier steps make).
    """
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # stdin: empty, input() raises EOFError
    for target, fd in fds.items():
        os.dup2(fd, target)
    top = max([2, *fds])
    os.closerange(top + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # drop the worker's control channel
    t = time.perf_counter()
    base = _vm_size_bytes()  # before /proc is replaced (it may end up empty)
    cwd = view.enter_private(policy, lock.uid, lock.own_pidns) if lock.view else lock.cwd
    os.chdir(cwd)
    t = _lap("private_mounts" if lock.view else "private_dir", t)
    os.umask(0o077)

    limits = {
        resource.RLIMIT_AS: base + policy.memory_mb * _MB,
        resource.RLIMIT_CPU: policy.cpu_s,
        resource.RLIMIT_FSIZE: policy.max_file_mb * _MB,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: 256,
    }
    for res, soft in limits.items():
        hard = soft + 1 if res == resource.RLIMIT_CPU else soft  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(res, (soft, hard))
    # Root ignores RLIMIT_NPROC: it bites after the uid drop. Per-slot uids (or the user namespace of each
    # worker) keep one execution's fork storm from eating another slot's budget.
    nproc = lock.nproc if lock.nproc is not None else policy.max_processes
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    t = _lap("rlimits", t)
    if lock.uid is not None and lock.keep_dac_read:
        linux.switch_uid_keeping(lock.uid, linux.CAP_DAC_READ_SEARCH)
    elif lock.uid is not None:
        os.setgroups([])
        os.setresgid(lock.uid, lock.uid, lock.uid)
        os.setresuid(lock.uid, lock.uid, lock.uid)
    elif lock.drop_caps:
        linux.drop_all_capabilities()
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries cannot give privileges back
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # set after setuid: a uid change clears it
    t = _lap("uid_and_no_new_privs", t)
    if lock.landlock_abi:
        landlock.restrict(policy.read_only + [d for d in DEVICES if d != "/dev/null"], [cwd, "/dev/null"],
                          lock.landlock_abi)
        t = _lap("landlock", t)
    if lock.seccomp:
        linux.load_seccomp(lock.seccomp)
        t = _lap("seccomp", t)

    # the worker ignores Ctrl-C; code gets Python's usual KeyboardInterrupt (sessions are interrupted with it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(_env(cwd))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = ["main.py"]
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = cwd
    if "numpy.random" in sys.modules:  # fork copies numpy's global RNG state: reseed like a fresh interpreter
        try:
            sys.modules["numpy.random"].seed(int.from_bytes(os.urandom(4), "little"))  # int seeding: ~10 us
        except Exception:
            pass


def _lap(name: str, since: float) -> float:
    now = time.perf_counter()
    LOCK_US[name] = (now - since) * 1e6
    return now


def _classify(exc: BaseException) -> tuple[str, str | None]:
    """(kind, detail) for an exception that escaped the model's code."""
    if isinstance(exc, MemoryError):
        return "resource_limit", "memory limit reached"
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return "resource_limit", "file size limit reached"
        if exc.errno == errno.ENOSPC:
            return "resource_limit", "disk space limit reached"
        if isinstance(exc, BlockingIOError) and exc.errno == errno.EAGAIN:
            return "resource_limit", "process limit reached"
    return "error", None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the code may have closed or broken its own stdout
            pass


def execute(code: str, namespace: dict[str, Any], *, filename: str = "main.py", notebook: bool = False) -> dict[str, Any]:
    """Run ``code`` like ``python main.py`` (or like a notebook cell); return a status dict, never raise."""
    status: dict[str, Any] = {"kind": "ok"}
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename)
        last = None
        if notebook and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), namespace)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        if e.code not in (None, 0):
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            status = {"kind": "error", "error_name": "SystemExit", "error_line": f"SystemExit: {e.code}"}
    except BaseException as e:  # noqa: BLE001 - everything the code raises is data
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None  # hide this frame
        if isinstance(e, SyntaxError):
            tb = None
        lines = traceback.format_exception(type(e), e, tb)
        text = "".join(lines)
        try:
            sys.stderr.write(text)
        except Exception:
            pass
        kind, detail = _classify(e)
        status = {
            "kind": kind,
            "error_name": type(e).__name__,
            "error_line": traceback.format_exception_only(type(e), e)[-1].strip(),
            "detail": detail,
        }
    _flush()
    return status


def write_status(status: dict[str, Any]) -> None:
    from toolrl.sandbox import protocol

    try:
        protocol.send(STATUS_FD, status)
    except OSError:
        pass


def run_once(code: str) -> None:
    """Stateless: one program, then exit (the PID namespace takes every leftover process with it)."""
    status = execute(code, {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"})
    status["lock_us"] = LOCK_US
    write_status(status)
    os._exit(0)


def serve_session() -> None:
    """Stateful: a notebook-like loop; variables live in one namespace until the session is closed."""
    from toolrl.sandbox import protocol

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    n = 0
    while True:
        try:
            msg = protocol.recv(REQUEST_FD)
        except (protocol.ChannelClosed, OSError, ValueError):
            os._exit(0)
        n += 1
        write_status(execute(msg["code"], namespace, filename=f"cell{n}.py", notebook=True))
