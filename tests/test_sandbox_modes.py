"""The attack suite (test_sandbox_attacks.py) in every mode a user may have, each in a subprocess:
root without CAP_SYS_ADMIN (user namespaces allowed; and blocked as by Docker's default seccomp profile), and
an unprivileged throwaway uid (with user namespaces; and with none). Root itself is the suite's own run.

Each run must reach its mode's isolation level (the suite asserts it) and pass every attack.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_support import modes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", list(modes.MODES))
def test_attack_suite_in_mode(mode: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("making the other modes (dropping capabilities, switching uid) needs root")
    missing = modes.tools_missing()
    assert not missing, f"missing tools {missing}: scripts/setup.sh installs libcap2-bin and util-linux"
    # the attack suite, and the behaviour suite (limits, sessions, a killed worker replaced) in the same mode
    argv = [sys.executable, "-m", "pytest", "tests/test_sandbox_attacks.py", "tests/test_sandbox_local.py", "-q",
            "-p", "no:cacheprovider", "-o", "addopts="]
    env = {"PYTHONPATH": f"{ROOT / 'src'}"}
    if os.environ.get("TOOLRL_DATA_DIR"):
        env["TOOLRL_DATA_DIR"] = os.environ["TOOLRL_DATA_DIR"]
    p = modes.run(mode, argv, cwd=ROOT, timeout=600, extra_env=env)
    tail = (p.stdout + p.stderr)[-4000:]
    assert p.returncode == 0, tail
    passed = re.search(r"(\d+) passed", p.stdout)
    assert passed and int(passed.group(1)) >= 40 and "failed" not in p.stdout, tail


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A directory another uid can walk into (pytest's own is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="toolrl-modes-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unprivileged_user_runs_code_with_no_isolation_flag(shared_tmp: Path) -> None:
    """The rollout path (build_sandbox from the default config) as a non-root user: no flag, full isolation."""
    if os.geteuid() != 0:
        pytest.skip("switching to a throwaway uid needs root")
    import json
    import secrets

    tmp_path = shared_tmp

    token = "SENTINEL-" + secrets.token_hex(8)
    (tmp_path / "answer.txt").write_text(token)
    code = tmp_path / "code.py"
    code.write_text(f"try:\n    print(open({str(tmp_path / 'answer.txt')!r}).read())\nexcept OSError as e:\n"
                    f"    print('blocked', type(e).__name__)\nprint(6 * 7)\n")
    tmp_path.chmod(0o755)
    for f in ("answer.txt", "code.py"):
        (tmp_path / f).chmod(0o644)
    cli = [sys.executable, "-m", "toolrl.cli.main", "sandbox"]
    env = {"PYTHONPATH": f"{ROOT / 'src'}", "TOOLRL_SANDBOX_EXPECT": ""}
    p = modes.run("user", [*cli, "run", str(code), "--json"], cwd=ROOT, timeout=300, extra_env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["kind"] == "ok" and "42" in out["stdout"] and "blocked" in out["stdout"] and token not in p.stdout
    assert "WARNING" not in p.stderr  # nothing below full isolation
    p = modes.run("user", [*cli, "check", "--json"], cwd=ROOT, timeout=300, extra_env=env)
    report = json.loads(p.stdout)
    assert report["level"] == "full" and report["layers"]["userns"].startswith("ok"), report
    assert p.returncode == 0 and report["isolated"], report
