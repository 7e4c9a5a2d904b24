"""The e2b backend driven through the real e2b-code-interpreter SDK against a local fake E2B server."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from toolrl.config.schema import SandboxConfig
from toolrl.sandbox.e2b import E2BSandbox
from toolrl.sandbox.local import LocalSandbox
from toolrl.types import ExecKind

from sandbox_support import attacks
from sandbox_support.fake_e2b import FakeE2B

pytestmark = pytest.mark.slow  # starts a pool and an HTTP server; runs in the slow pass


@pytest.fixture(scope="module")
def server() -> Iterator[FakeE2B]:
    local = LocalSandbox(SandboxConfig(pool_size=2, preload=["math"], stateful=True))
    with FakeE2B(local) as fake:
        yield fake
    local.close()


def make(fake: FakeE2B, **kw) -> E2BSandbox:  # noqa: ANN003
    cfg = SandboxConfig(backend="e2b", **kw)
    cfg.e2b.api_url = cfg.e2b.sandbox_url = fake.url
    cfg.e2b.api_key = "local-test-key"
    cfg.e2b.concurrency = kw.get("pool_size", 2)
    return E2BSandbox(cfg)


def test_session_reuses_one_sandbox_and_kills_it(server: FakeE2B) -> None:
    sb = make(server)
    n = len(server.created)
    assert sb.run("x = 20", timeout_s=5, session="traj-1").kind == ExecKind.OK
    r = sb.run("print(x * 2)\nx + 2", timeout_s=5, session="traj-1")
    assert r.kind == ExecKind.OK and r.stdout == "40\n22\n"
    assert len(server.created) == n + 1
    sid = server.created[-1]
    sb.close_session("traj-1")
    assert sid in server.killed


def test_errors_map_to_kinds(server: FakeE2B) -> None:
    sb = make(server)
    r = sb.run("1/0", timeout_s=5, session="e")
    assert r.kind == ExecKind.ERROR and r.error_name == "ZeroDivisionError"
    assert r.error_line == "ZeroDivisionError: division by zero"
    assert sb.run(attacks.MEMORY_BOMB, timeout_s=5, session="e").kind == ExecKind.RESOURCE
    sb.close()


def test_transport_failures_are_retried_then_infra(server: FakeE2B) -> None:
    sb = make(server, retries=2)
    server.fail_execute = 1
    r = sb.run("print('ok')", timeout_s=5, session="r")
    assert r.kind == ExecKind.OK and r.attempts == 2
    server.fail_execute = 10
    r = sb.run("print('ok')", timeout_s=5, session="r2")
    assert r.kind == ExecKind.INFRA and r.attempts == 3
    server.fail_execute = 0
    sb.close()


def test_concurrency_limit_and_no_lost_calls(server: FakeE2B) -> None:
    sb = make(server)
    n0 = len(server.created)
    out: list = [None] * 6

    def go(i: int) -> None:
        out[i] = sb.run(f"print({i})", timeout_s=5)  # no session: a throw-away sandbox each

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in out] == [f"{i}\n" for i in range(6)]
    fresh = server.created[n0:]
    assert len(fresh) == 6 and set(fresh) <= set(server.killed)  # each throw-away sandbox was killed
    sb.close()


def test_containment_through_e2b(server: FakeE2B) -> None:
    os.environ["TOOLRL_TEST_SECRET_API_KEY"] = "toolrl-test-secret"
    try:
        sb = make(server)
        assert sb.run(attacks.ENV_SECRET, timeout_s=5).stdout.strip().endswith("clean")
        r = sb.run(attacks.network(9), timeout_s=5)
        assert "CONNECTED" not in r.stdout
        sb.close()
    finally:
        os.environ.pop("TOOLRL_TEST_SECRET_API_KEY", None)


def test_missing_key_fails_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.errors import SandboxUnavailableError

    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(SandboxUnavailableError):
        E2BSandbox(SandboxConfig(backend="e2b"))
