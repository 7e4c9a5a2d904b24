"""The attack suite (test_sandbox_attacks.py) in every mode a user may have, each in a subprocess:
root without CAP_SYS_ADMIN (user namespaces allowed; and blocked as by Docker's default seccomp profile), and
an unprivileged throwaway uid (with user namespaces; and with none). Root itself is the suite's own run.

Each run must reach its mode's isolation level (the suite asserts it) and pass every attack.
"""

from __future__ import annotations

import os
import re
import sys
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
    argv = [sys.executable, "-m", "pytest", "tests/test_sandbox_attacks.py", "-m", "slow", "-q", "-p",
            "no:cacheprovider", "-o", "addopts="]
    env = {"PYTHONPATH": f"{ROOT / 'src'}"}
    if os.environ.get("TOOLRL_DATA_DIR"):
        env["TOOLRL_DATA_DIR"] = os.environ["TOOLRL_DATA_DIR"]
    p = modes.run(mode, argv, cwd=ROOT, timeout=600, extra_env=env)
    tail = (p.stdout + p.stderr)[-4000:]
    assert p.returncode == 0, tail
    passed = re.search(r"(\d+) passed", p.stdout)
    assert passed and int(passed.group(1)) >= 25 and "failed" not in p.stdout, tail
