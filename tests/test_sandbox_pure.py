"""Pure pieces of the sandbox: capture capping, result records, counting, registry, import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from toolrl.config.schema import RootConfig, SandboxConfig
from toolrl.errors import ConfigError, SandboxUnavailableError
from toolrl.sandbox import build_sandbox, count_kinds
from toolrl.sandbox.base import ExecResult
from toolrl.sandbox.e2b import execution_to_result, resolve_api_key
from toolrl.sandbox.policy import level_of, meets, policy_from_config, resolve_isolation
from toolrl.sandbox.results import Capture, last_line, result_from_dict, result_to_dict
from toolrl.types import ExecKind


def test_capture_keeps_head_and_tail() -> None:
    c = Capture(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"):
        c.add(chunk)
    assert c.truncated and c.total == 26
    text = c.text()
    assert text.startswith("abcde") and text.endswith("vwxyz") and "[16 bytes cut]" in text


def test_capture_small_output_untouched() -> None:
    c = Capture(100)
    c.add("héllo\n".encode())
    assert not c.truncated and c.text() == "héllo\n"


def test_capture_invalid_utf8_is_replaced() -> None:
    c = Capture(100)
    c.add(b"\xff\xfeok")
    assert c.text().endswith("ok") and "\ufffd" in c.text()


def test_result_round_trip_and_last_line() -> None:
    r = ExecResult(ExecKind.TIMEOUT, stdout="a", detail="slow", attempts=2)
    assert result_from_dict(result_to_dict(r)) == r
    assert last_line("Traceback...\n  x\nValueError: bad\n\n") == "ValueError: bad"
    assert last_line("") is None


def test_count_kinds_has_every_kind() -> None:
    counts = count_kinds([ExecResult(ExecKind.OK), ExecResult(ExecKind.OK), ExecResult(ExecKind.INFRA)])
    assert counts == {"ok": 2, "error": 0, "timeout": 0, "resource_limit": 0, "infra_error": 1}


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        build_sandbox(RootConfig(), backend="docker")


def test_jupyter_backend_explains_the_alternative() -> None:
    with pytest.raises(SandboxUnavailableError) as e:
        build_sandbox(RootConfig(), backend="jupyter")
    assert "stateful" in (e.value.hint or "")


def test_allowlist_holds_python_and_system_but_not_the_project_or_data(tmp_path) -> None:  # noqa: ANN001
    p = policy_from_config(SandboxConfig(), cwd=str(tmp_path))
    allowed = p.read_only
    assert any(sys.base_prefix.startswith(e) for e in allowed) and any(sys.prefix.startswith(e) for e in allowed)
    project = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
    for outside in (str(tmp_path), project, os.path.expanduser("~/.cache"), os.environ.get("TOOLRL_DATA_DIR", "/srv")):
        real = os.path.realpath(outside)
        assert not any(real == a or real.startswith(a.rstrip("/") + "/") for a in allowed), (outside, allowed)
    assert not any(a in ("/", "/etc", "/home", "/root", "/tmp", "/work") for a in allowed)
    here = os.path.dirname(os.path.abspath(__file__))
    assert here in policy_from_config(SandboxConfig(allow_paths=[here])).read_only
    # /tmp is fine (each execution's fresh /tmp gets allowlisted trees back); /dev/shm and /proc cannot be shown
    assert os.path.realpath(tmp_path) in policy_from_config(SandboxConfig(allow_paths=[str(tmp_path)])).read_only
    with pytest.raises(ConfigError) as e:
        policy_from_config(SandboxConfig(allow_paths=["/dev/shm"]))
    assert "/dev" in str(e.value) and e.value.hint


def test_levels_from_layers_and_the_deprecated_alias(capsys: pytest.CaptureFixture[str]) -> None:
    full = {"netns": "ok", "view": "ok", "pidns": "ok", "seccomp": "ok"}
    assert level_of(full) == "full"
    assert level_of({**full, "pidns": "off: x"}) == "contained"
    assert level_of({"netns": "off", "view": "off", "seccomp": "ok", "landlock": "ok (ABI 7)"}) == "contained"
    assert level_of({"netns": "off", "view": "off", "seccomp": "off", "landlock": "ok (ABI 7)"}) == "none"
    assert level_of({"seccomp": "ok", "landlock": "off: old kernel"}) == "none"
    assert meets("full", "contained") and meets("contained", "contained") and not meets("none", "contained")
    assert SandboxConfig().isolation == "contained"  # the default refuses to run below contained
    assert resolve_isolation(SandboxConfig(require_isolation=False)) == "none"
    assert resolve_isolation(SandboxConfig(require_isolation=True)) == "contained"
    assert "deprecated" in capsys.readouterr().err


def test_refusal_is_one_line_with_a_hint() -> None:
    from toolrl.sandbox.local import refusal_error

    e = refusal_error({"level": "none", "required": "contained",
                       "protections": {"netns": "off: Operation not permitted", "seccomp": "ok"}})
    assert "'none'" in str(e) and "contained" in str(e) and "\n" not in str(e)
    assert "docs/sandbox.md" in (e.hint or "") and "isolation=none" in (e.hint or "")
    e = refusal_error({"setup_error": "maps could not be written; set sandbox.namespaces=false to ..."})
    assert "maps could not be written" in str(e) and "sandbox.namespaces=false" in (e.hint or "")


def test_e2b_key_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(SandboxUnavailableError) as e:
        resolve_api_key(SandboxConfig(backend="e2b"))
    assert "E2B_API_KEY" in (e.value.hint or "")
    monkeypatch.setenv("E2B_API_KEY", "k")
    assert resolve_api_key(SandboxConfig(backend="e2b")) == "k"


def test_e2b_execution_mapping() -> None:
    from e2b_code_interpreter.models import Execution, ExecutionError, Logs, Result

    ok = Execution(results=[Result(text="42", is_main_result=True)], logs=Logs(stdout=["hi\n"]))
    r = execution_to_result(ok, 1000, 0.1)
    assert r.kind == ExecKind.OK and r.stdout == "hi\n42\n"
    bad = Execution(error=ExecutionError("NameError", "name 'x' is not defined", "Traceback\nNameError: ..."))
    r = execution_to_result(bad, 1000, 0.1)
    assert r.kind == ExecKind.ERROR and r.error_line == "NameError: name 'x' is not defined"
    mem = execution_to_result(Execution(error=ExecutionError("MemoryError", "", "tb")), 1000, 0.1)
    assert mem.kind == ExecKind.RESOURCE


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, toolrl.sandbox, toolrl.sandbox.local, toolrl.sandbox.e2b\n"
        "bad = [m for m in ('vllm', 'deepspeed', 'wandb', 'torch', 'e2b_code_interpreter', 'sympy') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
