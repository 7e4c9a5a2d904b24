"""Attack suite: hostile code against every backend that runs here; each test asserts containment.

Backends: local (warm pool) and subprocess (fresh isolated interpreter per call). After the suite each
sandbox must still serve requests and no process of its uids may be left.

test_sandbox_modes.py runs this same file again as root without CAP_SYS_ADMIN and as an unprivileged uid
(TOOLRL_SANDBOX_MODE names the mode; TOOLRL_SANDBOX_NAMESPACES=0 forces the seccomp + Landlock fallback;
TOOLRL_SANDBOX_EXPECT is the isolation level the mode must reach).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolrl.config.schema import SandboxConfig
from toolrl.sandbox.local import LocalSandbox, SubprocessSandbox
from toolrl.sandbox.workers import procs_of_uids
from toolrl.types import ExecKind

from sandbox_support import attacks

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
T = 1.5  # wall-clock limit for hostile code


MODE = os.environ.get("TOOLRL_SANDBOX_MODE", "root")
NAMESPACES = os.environ.get("TOOLRL_SANDBOX_NAMESPACES", "1") != "0"
EXPECT = os.environ.get("TOOLRL_SANDBOX_EXPECT")
BACKENDS = ["local", "subprocess"] if MODE == "root" else ["local"]  # the fresh-interpreter path once is enough


def _config(**kw: object) -> SandboxConfig:
    base = dict(pool_size=2, preload=["math", "numpy", "sympy"], memory_mb=512, max_file_mb=8, namespaces=NAMESPACES)
    return SandboxConfig(**{**base, **kw})  # type: ignore[arg-type]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (a /proc scan)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parent[int(name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def leftovers(sb) -> set[int]:  # noqa: ANN001
    """Processes beyond the pool's own (workers, and the waiting starter of a user-namespace worker)."""
    time.sleep(0.2)
    return (descendants(os.getpid()) - sb.baseline) | set(procs_of_uids(sb.uids))


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    os.environ["TOOLRL_TEST_SECRET_API_KEY"] = "toolrl-test-secret"  # a secret the parent holds
    cls = LocalSandbox if request.param == "local" else SubprocessSandbox
    sb = cls(_config(), cwd=str(PROJECT))
    if EXPECT:
        assert sb.level == EXPECT, (sb.level, sb.protections)
    if MODE == "user-maskedproc":  # no fresh procfs allowed: executions see an empty /proc, never the host's
        assert sb.run("import os\nprint(os.listdir('/proc'))", timeout_s=10).stdout == "[]\n"
    sb.baseline = descendants(os.getpid())
    yield sb
    # after every attack: still serving, nothing left behind
    r = sb.run("import sympy\nprint(sympy.Integer(7) * 6)", timeout_s=30)
    assert r.kind == ExecKind.OK and r.stdout == "42\n"
    assert leftovers(sb) == set()
    sb.close()
    assert procs_of_uids(sb.uids) == []
    os.environ.pop("TOOLRL_TEST_SECRET_API_KEY", None)


@pytest.fixture()
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A secret in a fresh directory outside every list, readable by the user running the tests."""
    token = "SENTINEL-" + secrets.token_hex(8)
    d = tmp_path_factory.mktemp("outside")
    f = d / "answer.txt"
    f.write_text(token)
    for q in (d.parent, d):
        q.chmod(0o755)
    f.chmod(0o644)
    assert f.read_text() == token  # the host can read it: only the sandbox must not
    yield f, token


def assert_contained(r, token: str) -> None:  # noqa: ANN001
    text = r.stdout + r.stderr
    assert token not in text, text[-2000:]
    assert "LEAK" not in r.stdout and "CONNECTED" not in r.stdout, r.stdout[-2000:]


def run(sb, code: str, timeout_s: float = 10.0):  # noqa: ANN001
    return sb.run(code, timeout_s=timeout_s)


def test_network_is_unreachable(sandbox) -> None:  # noqa: ANN001
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    try:
        r = run(sandbox, attacks.network(listener.getsockname()[1]))
        assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever reached the test's listener
    finally:
        listener.close()


@pytest.mark.parametrize("path", ["/etc/shadow", "/root/.bashrc", "/proc/1/environ"])
def test_root_only_files_unreadable(sandbox, path: str) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.read_file(path))
    if path == "/proc/1/environ" and "LEAK" in r.stdout:  # PID 1 of its own namespace is the code itself
        assert run(sandbox, "import os\nprint(os.getpid())").stdout == "1\n"
        assert "toolrl-test-secret" not in r.stdout and "PATH=" in r.stdout
        return
    assert "LEAK" not in r.stdout


def test_project_files_and_checkpoints_hidden(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt = tmp_path / "checkpoints" / "step_000010"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_text("weights")
    (ckpt / "model.safetensors").chmod(0o644)
    for d in (tmp_path, tmp_path / "checkpoints", ckpt):
        d.chmod(0o755)
    for target in (PROJECT / "pyproject.toml", PROJECT / "src" / "toolrl" / "types.py", ckpt / "model.safetensors"):
        assert target.exists()
        r = run(sandbox, attacks.read_file(target))
        assert "LEAK" not in r.stdout, target
    r = run(sandbox, attacks.list_dir(PROJECT))
    assert "pyproject.toml" not in r.stdout and "src" not in r.stdout


def test_parent_secrets_not_in_environment(sandbox) -> None:  # noqa: ANN001
    assert run(sandbox, attacks.ENV_SECRET).stdout.strip().endswith("clean")
    assert run(sandbox, attacks.ENV_SECRET_PROC).stdout.strip() == "clean"


@pytest.mark.parametrize("target", ["/etc/toolrl-pwned", "/tmp/../etc/pwned", "PROJECT/pwned.txt"])
def test_cannot_write_outside_cwd(sandbox, target: str) -> None:  # noqa: ANN001
    target = target.replace("PROJECT", str(PROJECT))
    r = run(sandbox, attacks.write_file(target))
    assert "WROTE" not in r.stdout
    assert not Path(target).exists()


def test_files_do_not_survive_between_executions(sandbox) -> None:  # noqa: ANN001
    code = "open('note.txt', 'w').write('x')\ntry:\n    open('/var/tmp/n', 'w').write('x')\nexcept OSError:\n    pass"
    assert run(sandbox, code).kind == ExecKind.OK
    for _ in range(3):  # whichever slot serves it
        r = run(sandbox, "import os\nprint(os.listdir('.'), os.path.exists('/var/tmp/n'))")
        assert r.stdout == "[] False\n"


def test_fork_storm(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.FORK_STORM, timeout_s=T)
    assert r.kind in (ExecKind.TIMEOUT, ExecKind.RESOURCE)


@pytest.mark.parametrize("code", [attacks.MEMORY_BOMB, attacks.MEMORY_HOG])
def test_memory_bombs(sandbox, code: str) -> None:  # noqa: ANN001
    assert run(sandbox, code).kind == ExecKind.RESOURCE


def test_big_file_hits_file_size_limit(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.BIG_FILE)
    assert r.kind == ExecKind.RESOURCE and "file size" in (r.detail or "")


@pytest.mark.parametrize("code", [attacks.BUSY_LOOP, attacks.FINALLY_LOOP, attacks.FLOOD_STDOUT])
def test_never_ending_code_is_killed_on_time(sandbox, code: str) -> None:  # noqa: ANN001
    t = time.monotonic()
    r = run(sandbox, code, timeout_s=T)
    assert r.kind == ExecKind.TIMEOUT and time.monotonic() - t < T + 4
    assert len(r.stdout) <= sandbox.cfg.max_capture_bytes + 100


def test_huge_output_capped(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.HUGE_OUTPUT)
    assert r.kind == ExecKind.OK and r.truncated and r.stdout.rstrip().endswith("END")


def test_closed_stdout(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.CLOSE_STDOUT)
    assert r.kind in (ExecKind.OK, ExecKind.ERROR)  # the code broke its own output, not the sandbox
    assert run(sandbox, "print('fine')").stdout == "fine\n"


def test_double_forked_grandchild_dies_with_the_execution(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.double_fork("forked"), timeout_s=T)
    assert r.kind == ExecKind.TIMEOUT and "forked" in r.stdout
    assert leftovers(sandbox) == set()


def test_grandchild_of_a_finished_program_is_killed(sandbox) -> None:  # noqa: ANN001
    code = "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\nprint('done')"
    r = run(sandbox, code)
    assert r.kind == ExecKind.OK
    assert leftovers(sandbox) == set()


@pytest.mark.parametrize("code", [attacks.KILL_PARENT, attacks.KILL_ALL])
def test_signalling_the_parent_is_harmless(sandbox, code: str) -> None:  # noqa: ANN001
    run(sandbox, code)
    assert run(sandbox, "print('alive')").stdout == "alive\n"


def test_numpy_random_differs_between_executions(sandbox) -> None:  # noqa: ANN001
    code = "import numpy as np\nprint(np.random.randint(0, 2**30))"
    outs = {run(sandbox, code).stdout for _ in range(3)}
    assert len(outs) == 3


# -- the allowlist: nothing outside it, by any route -------------------------------------------------------


def test_sentinel_outside_every_list_is_unreachable(sandbox, sentinel, tmp_path: Path) -> None:  # noqa: ANN001
    path, token = sentinel
    link = tmp_path / "innocent-looking"
    link.symlink_to(path)  # a symlinked path on the host
    for target in (path, link, path.parent):
        assert_contained(run(sandbox, attacks.read_file(target)), token)
        assert_contained(run(sandbox, attacks.list_dir(target)), token)
    r = run(sandbox, attacks.read_via_tricks(path), timeout_s=20)
    assert_contained(r, token)
    fds = json.loads(r.stdout.split("FDS ", 1)[1].splitlines()[0])
    assert set(fds) <= {0, 1, 2, 3}, fds  # nothing inherited beyond stdin/out/err and the status channel
    assert os.stat(path).st_nlink == 1  # no hard link was made


def test_data_directory_answers_are_unreachable(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    token = "ANSWER-" + secrets.token_hex(8)
    data = tmp_path / "data"
    data.mkdir()
    (data / "aime24.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": token}) + "\n")
    for q in (tmp_path, data, data / "aime24.jsonl"):
        q.chmod(0o755 if q.is_dir() else 0o644)
    assert_contained(run(sandbox, attacks.read_file(data / "aime24.jsonl")), token)
    real = os.environ.get("TOOLRL_DATA_DIR")
    if real and os.access(real, os.R_OK | os.X_OK):  # the benchmark files the project really uses
        files = sorted(f for f in os.listdir(real) if f.endswith(".jsonl"))[:3]
        for name in files:
            try:
                first = open(os.path.join(real, name)).readline().strip()
            except OSError:
                continue  # not readable by this uid on the host either
            r = run(sandbox, attacks.read_file(os.path.join(real, name)))
            assert "LEAK" not in r.stdout and (not first or first[:40] not in r.stdout)
        r = run(sandbox, attacks.list_dir(real))
        assert "LISTING" not in r.stdout


def test_home_and_model_cache_are_unreachable(sandbox) -> None:  # noqa: ANN001
    for target in (os.path.expanduser("~"), os.path.expanduser("~/.cache"), "/home", "/work", "/srv", "/mnt"):
        r = run(sandbox, attacks.list_dir(target))
        if "LISTING" in r.stdout:  # only the path leading to an allowlisted directory (the interpreter) shows
            seen = set(eval(r.stdout.split("LISTING", 1)[1].strip()))
            lead = {a[len(target):].strip("/").split("/")[0] for a in sandbox.policy.read_only
                    if a.startswith(target.rstrip("/") + "/")}
            assert seen <= lead, (target, seen, lead)


def test_sessions_cannot_see_each_other(sandbox) -> None:  # noqa: ANN001
    if not isinstance(sandbox, LocalSandbox):
        pytest.skip("sessions live in the local backend")
    sb = LocalSandbox(_config(pool_size=1, stateful=True, preload=["math"]))  # one worker: both sessions on it
    try:
        r = sb.run("import os\nsecret_a = 'SESSIONSECRET'\nopen('mine.txt','w').write(secret_a)\n"
                   "try:\n    open('/tmp/shared.txt','w').write(secret_a)\nexcept OSError:\n    pass\n"
                   "print(os.getcwd())", timeout_s=10, session="a")
        assert r.kind == ExecKind.OK, r
        peer = r.stdout.strip()
        spy = attacks.SESSION_SPY.replace("PEER", repr(peer))
        r = sb.run(spy, timeout_s=20, session="b")
        assert r.kind == ExecKind.OK and r.stdout.strip().endswith("done"), r
        assert "LEAK" not in r.stdout and "secret_a" not in r.stdout and "MEMOPEN" not in r.stdout, r.stdout
        assert sb.run("print(secret_a)", timeout_s=10, session="a").stdout == "SESSIONSECRET\n"
    finally:
        sb.close()


def test_filling_tmp_and_shm_is_bounded(sandbox) -> None:  # noqa: ANN001
    shm_before = set(os.listdir("/dev/shm"))
    r = run(sandbox, attacks.fill_tmp(sandbox.policy.tmpfs_mb * 2), timeout_s=30)
    assert "FILLED" not in r.stdout, r.stdout
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    assert run(sandbox, "open('ok.txt','w').write('x'); print('fine')").stdout == "fine\n"


def test_exhausting_file_descriptors(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.FD_EXHAUST)
    assert "stopped at" in r.stdout and int(r.stdout.split()[2]) <= 256
    assert run(sandbox, "print('fine')").stdout == "fine\n"


def test_ptrace_and_signals_never_reach_the_worker(sandbox) -> None:  # noqa: ANN001
    r = run(sandbox, attacks.PTRACE_AND_SIGNAL, timeout_s=20)
    assert "PTRACED" not in r.stdout, r.stdout
    assert run(sandbox, "print('alive')").stdout == "alive\n"
    assert sandbox.restarts == 0 if isinstance(sandbox, LocalSandbox) else True


def test_abstract_unix_socket_of_the_host_is_unreachable(sandbox) -> None:  # noqa: ANN001
    name = "\0toolrl-test-" + secrets.token_hex(6)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        srv = socket.socket(socket.AF_UNIX, kind)
        srv.bind(name)
        if kind == socket.SOCK_STREAM:
            srv.listen(1)
        srv.settimeout(0.5)
        try:
            r = run(sandbox, attacks.abstract_socket(name))
            assert "CONNECTED" not in r.stdout and "SENT" not in r.stdout, r.stdout
            with pytest.raises(socket.timeout):
                srv.accept() if kind == socket.SOCK_STREAM else srv.recv(100)
        finally:
            srv.close()
