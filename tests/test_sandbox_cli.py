"""`toolrl sandbox run` and `toolrl sandbox check` through the real CLI app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from toolrl.cli.main import app

pytestmark = pytest.mark.slow  # each call starts a sandbox (about 2 s)

FAST = ["sandbox.pool_size=1", "sandbox.preload=[]"]


def test_run_prints_the_observation_and_kind(tmp_path) -> None:  # noqa: ANN001
    f = tmp_path / "code.py"
    f.write_text("print(6 * 7)")
    res = CliRunner().invoke(app, ["sandbox", "run", str(f), *FAST])
    assert res.exit_code == 0, res.output
    assert "42" in res.stdout


def test_run_json_from_stdin() -> None:
    res = CliRunner().invoke(app, ["sandbox", "run", "-", "--json", *FAST], input="1/0\n")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "error" and "ZeroDivisionError" in data["observation"]


def test_check_reports_active_protections() -> None:
    res = CliRunner().invoke(app, ["sandbox", "check", "--json", *FAST])
    data = json.loads(res.stdout)
    names = {c["name"]: c["active"] for c in data["checks"]}
    assert names["network"] and names["no privileges"] and names["project hidden"]
    assert names["outside the allowlist"] and names["host unix sockets"] and names["data directory"]
    assert data["level"] in ("full", "contained") and data["layers"]["seccomp"] == "ok"
    if data["level"] == "full":
        assert names["pid namespace"] and data["layers"]["view"] == "ok"
    assert res.exit_code == (0 if data["isolated"] else 1)


def test_check_table_lists_layers_and_level() -> None:
    res = CliRunner().invoke(app, ["sandbox", "check", *FAST])
    for word in ("isolation layers", "seccomp", "landlock", "view", "level", "probes"):
        assert word in res.stdout, res.stdout
