"""Attack suite: hostile code against every backend that runs here; each test asserts containment.

Backends: local (warm pool) and subprocess (fresh isolated interpreter per call). After the suite each
sandbox must still serve requests and no process of its uids may be left.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="module", params=["local", "subprocess"])
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    os.environ["TOOLRL_TEST_SECRET_API_KEY"] = "toolrl-test-secret"  # a secret the parent holds
    cfg = SandboxConfig(pool_size=2, preload=["math", "numpy", "sympy"], memory_mb=512, max_file_mb=8)
    cls = LocalSandbox if request.param == "local" else SubprocessSandbox
    sb = cls(cfg, cwd=str(PROJECT))
    yield sb
    # after every attack: still serving, nothing left behind
    r = sb.run("import sympy\nprint(sympy.Integer(7) * 6)", timeout_s=30)
    assert r.kind == ExecKind.OK and r.stdout == "42\n"
    sb.close()
    assert procs_of_uids(sb.uids) == []
    os.environ.pop("TOOLRL_TEST_SECRET_API_KEY", None)


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
    assert run(sandbox, "open('note.txt', 'w').write('x'); open('/var/tmp/n', 'w').write('x')").kind == ExecKind.OK
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
    time.sleep(0.2)
    assert procs_of_uids(sandbox.uids) == []


def test_grandchild_of_a_finished_program_is_killed(sandbox) -> None:  # noqa: ANN001
    code = "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\nprint('done')"
    r = run(sandbox, code)
    assert r.kind == ExecKind.OK
    time.sleep(0.2)
    assert procs_of_uids(sandbox.uids) == []


@pytest.mark.parametrize("code", [attacks.KILL_PARENT, attacks.KILL_ALL])
def test_signalling_the_parent_is_harmless(sandbox, code: str) -> None:  # noqa: ANN001
    run(sandbox, code)
    assert run(sandbox, "print('alive')").stdout == "alive\n"


def test_numpy_random_differs_between_executions(sandbox) -> None:  # noqa: ANN001
    code = "import numpy as np\nprint(np.random.randint(0, 2**30))"
    outs = {run(sandbox, code).stdout for _ in range(3)}
    assert len(outs) == 3
