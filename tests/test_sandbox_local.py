"""The local backend's behaviour: result kinds, script semantics, limits, concurrency, sessions, recovery.

Real isolated workers (small preload so the pool starts in about a second); slower checks live in
test_sandbox_attacks.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from toolrl.config.schema import SandboxConfig
from toolrl.sandbox.local import LocalSandbox
from toolrl.sandbox.workers import procs_of_uids
from toolrl.types import ExecKind

from sandbox_support import attacks


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    sb = LocalSandbox(SandboxConfig(pool_size=2, preload=["math"], stateful=True, memory_mb=256))
    yield sb
    uids = sb.uids
    sb.close()
    assert procs_of_uids(uids) == [], "sandbox processes left after close()"


def run(sb: LocalSandbox, code: str, timeout_s: float = 5.0, session: str | None = None):
    return sb.run(code, timeout_s=timeout_s, session=session)


def test_ok_and_script_semantics(sandbox: LocalSandbox) -> None:
    r = run(sandbox, "x = 6 * 7\nx\nprint(x)")
    assert r.kind == ExecKind.OK and r.stdout == "42\n"  # a bare expression prints nothing, like python file.py


def test_error_reports_name_last_line_and_traceback(sandbox: LocalSandbox) -> None:
    r = run(sandbox, "print('before')\ndef f():\n    return 1 / 0\nf()")
    assert r.kind == ExecKind.ERROR and r.stdout == "before\n"
    assert r.error_name == "ZeroDivisionError"
    assert r.error_line == "ZeroDivisionError: division by zero"
    assert "line 3, in f" in r.stderr and "worker" not in r.stderr and "child.py" not in r.stderr


def test_syntax_error_and_exit_codes(sandbox: LocalSandbox) -> None:
    r = run(sandbox, "def broken(:\n  pass")
    assert r.kind == ExecKind.ERROR and r.error_name == "SyntaxError"
    assert run(sandbox, "import sys\nsys.exit(0)").kind == ExecKind.OK
    r = run(sandbox, "import sys\nsys.exit(3)")
    assert r.kind == ExecKind.ERROR and r.error_line == "SystemExit: 3"
    r = run(sandbox, "import os\nos._exit(5)")
    assert r.kind == ExecKind.ERROR


def test_stdin_is_empty(sandbox: LocalSandbox) -> None:
    r = run(sandbox, "input()")
    assert r.kind == ExecKind.ERROR and r.error_name == "EOFError"


def test_busy_loop_times_out_quickly(sandbox: LocalSandbox) -> None:
    t = time.monotonic()
    r = run(sandbox, attacks.BUSY_LOOP, timeout_s=0.5)
    assert r.kind == ExecKind.TIMEOUT and time.monotonic() - t < 6  # generous: shared, loaded CI cores


def test_memory_hog_is_a_resource_failure(sandbox: LocalSandbox) -> None:
    for code in (attacks.MEMORY_BOMB, attacks.MEMORY_HOG):
        r = run(sandbox, code)
        assert r.kind == ExecKind.RESOURCE, r


def test_fork_storm_contained(sandbox: LocalSandbox) -> None:
    r = run(sandbox, attacks.FORK_STORM, timeout_s=1.0)
    assert r.kind in (ExecKind.TIMEOUT, ExecKind.RESOURCE)
    assert run(sandbox, "print('alive')").stdout == "alive\n"
    assert procs_of_uids(sandbox.uids) == []


def test_process_limit_is_resource(sandbox: LocalSandbox) -> None:
    code = "import os, time\nkids = []\nfor _ in range(100):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(5); os._exit(0)\n    kids.append(pid)"
    r = run(sandbox, code)
    assert r.kind == ExecKind.RESOURCE and "process" in (r.detail or "")


def test_huge_output_is_capped_with_head_and_tail(sandbox: LocalSandbox) -> None:
    r = run(sandbox, attacks.HUGE_OUTPUT)
    assert r.kind == ExecKind.OK and r.truncated
    assert len(r.stdout) < sandbox.cfg.max_capture_bytes + 100
    assert r.stdout.startswith("x" * 99) and r.stdout.rstrip().endswith("END")


def test_concurrent_requests_beyond_pool_are_queued_not_dropped(sandbox: LocalSandbox) -> None:
    results: list = [None] * 12

    def go(i: int) -> None:
        results[i] = run(sandbox, f"import time\ntime.sleep(0.05)\nprint({i})")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(12)]


def test_stateful_sessions_keep_variables_apart(sandbox: LocalSandbox) -> None:
    assert run(sandbox, "x = 41", session="a").kind == ExecKind.OK
    assert run(sandbox, "x = 'other'", session="b").kind == ExecKind.OK
    r = run(sandbox, "x + 1", session="a")
    assert r.kind == ExecKind.OK and r.stdout == "42\n"  # sessions echo the last expression, like a notebook
    assert run(sandbox, "print(x)", session="b").stdout == "other\n"
    sandbox.close_session("a")
    sandbox.close_session("b")
    assert run(sandbox, "x", session="a").error_name == "NameError"
    sandbox.close_session("a")


def test_session_timeout_interrupts_and_keeps_state(sandbox: LocalSandbox) -> None:
    run(sandbox, "y = 5", session="t")
    r = run(sandbox, "while True: pass", timeout_s=0.5, session="t")
    assert r.kind == ExecKind.TIMEOUT and "kept" in (r.detail or "")
    assert run(sandbox, "y", session="t").stdout == "5\n"
    ignore = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    r = run(sandbox, ignore, timeout_s=0.5, session="t")  # ignores the interrupt: killed
    assert r.kind == ExecKind.TIMEOUT and "restarted" in (r.detail or "")
    assert run(sandbox, "y", session="t").error_name == "NameError"
    sandbox.close_session("t")


def test_dead_worker_is_replaced_and_call_retried(sandbox: LocalSandbox) -> None:
    before = sandbox.restarts
    for w in sandbox._workers:
        assert w is not None and w.pid is not None
        os.kill(w.pid, signal.SIGKILL)
        # Dead before the call: in a user namespace the handle's process is the parent outside, and its worker child
        # dies only on the parent's exit (PDEATHSIG); on a loaded machine a call could still reach it in between.
        w.proc.wait(timeout=10)
    r = run(sandbox, "print('after crash')")
    assert r.kind == ExecKind.OK and r.stdout == "after crash\n" and r.attempts >= 2
    assert sandbox.restarts > before


def test_infra_after_retries_when_workers_keep_dying(monkeypatch: pytest.MonkeyPatch) -> None:
    sb = LocalSandbox(SandboxConfig(pool_size=1, preload=[], retries=1))
    try:
        from toolrl.sandbox import workers

        def boom(self, msg, timeout_s):  # noqa: ANN001
            raise workers.WorkerLost("simulated crash")

        monkeypatch.setattr(workers.WorkerHandle, "request", boom)
        r = sb.run("print(1)", timeout_s=1)
        assert r.kind == ExecKind.INFRA and r.attempts == 2 and "simulated crash" in (r.detail or "")
    finally:
        monkeypatch.undo()
        sb.close()


def test_allow_paths_are_readable_and_hide_paths_cover_inside_them() -> None:
    import shutil
    import tempfile
    from pathlib import Path

    bases = [Path(__file__).resolve().parents[1], Path.home()]  # not /tmp: each execution has its own
    base = next((b for b in bases if os.access(b, os.W_OK) and not str(b.resolve()).startswith("/tmp")), None)
    if base is None:
        pytest.skip("no writable directory outside /tmp to share with the sandbox")
    d = Path(tempfile.mkdtemp(prefix=".toolrl-allow-", dir=base))
    try:
        (d / "shared.txt").write_text("visible")
        (d / "private").mkdir()
        (d / "private" / "key.txt").write_text("SECRET")
        for q in (d, d / "private"):
            q.chmod(0o755)
        for q in (d / "shared.txt", d / "private" / "key.txt"):
            q.chmod(0o644)
        code = (f"import os\nprint(open({str(d / 'shared.txt')!r}).read())\n"
                f"try:\n    print(os.listdir({str(d / 'private')!r}))\nexcept OSError as e:\n    print(type(e).__name__)\n"
                f"try:\n    open({str(d / 'shared.txt')!r}, 'a')\nexcept OSError as e:\n    print('read-only', type(e).__name__)\n")
        sb = LocalSandbox(SandboxConfig(pool_size=1, preload=[], allow_paths=[str(d)], hide_paths=[str(d / "private")]))
        try:
            r = sb.run(code, timeout_s=10)
        finally:
            sb.close()
        assert r.stdout.startswith("visible\n") and "SECRET" not in r.stdout and "read-only" in r.stdout, r
        if sb.protections.get("view") == "ok":  # the blocklist is an extra of the mount view
            assert "[]" in r.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_an_allowlisted_tree_under_tmp_stays_visible_while_the_rest_of_tmp_is_private() -> None:
    """A virtual environment or checkout under /tmp (CI clones often live there) stays readable and read-only in
    every mode (the view puts it back over each execution's fresh /tmp); a sibling in the host's /tmp does not."""
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="toolrl-allow-", dir="/tmp"))
    sibling = Path(tempfile.mkdtemp(prefix="toolrl-sibling-", dir="/tmp"))
    try:
        (d / "shared.txt").write_text("visible")
        (sibling / "secret.txt").write_text("SECRET")
        for q in (d, sibling):
            q.chmod(0o755)
        for q in (d / "shared.txt", sibling / "secret.txt"):
            q.chmod(0o644)
        code = (f"import os\nprint(open({str(d / 'shared.txt')!r}).read())\n"
                f"try:\n    print(open({str(sibling / 'secret.txt')!r}).read())\nexcept OSError as e:\n    print(type(e).__name__)\n"
                f"try:\n    open({str(d / 'shared.txt')!r}, 'a')\nexcept OSError as e:\n    print('read-only', type(e).__name__)\n"
                "open('scratch', 'w').write('x')\nprint('scratch ok')\n")  # the private working directory
        sb = LocalSandbox(SandboxConfig(pool_size=1, preload=[], allow_paths=[str(d)]))
        try:
            r = sb.run(code, timeout_s=10)
        finally:
            sb.close()
        assert r.stdout.startswith("visible\n") and "SECRET" not in r.stdout, r
        assert "read-only" in r.stdout and "scratch ok" in r.stdout, r
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(sibling, ignore_errors=True)


def test_a_child_that_cannot_be_locked_down_is_an_infra_failure_retried() -> None:
    import dataclasses

    from toolrl.sandbox.workers import WorkerHandle

    sb = LocalSandbox(SandboxConfig(pool_size=1, preload=[], retries=1))
    try:
        if sb.protections.get("view") != "ok":
            pytest.skip("the broken policy below only breaks the per-execution /tmp of the mount view")
        broken = WorkerHandle(dataclasses.replace(sb.policy, tmpfs_mb=-1))  # the kernel refuses that tmpfs
        broken.start(60)
        good = sb._workers[0]
        sb._workers[0] = broken
        r = sb.run("print('never')", timeout_s=5)
        assert r.kind == ExecKind.INFRA and r.attempts == 2 and "lock-down failed" in (r.detail or ""), r
        assert r.stdout == ""
        sb._workers[0] = good
        broken.stop()
        assert sb.run("print('fine')", timeout_s=5).stdout == "fine\n"
    finally:
        sb.close()
