"""rollout.backend=auto: vLLM where it is installed and supports the model and device, else hf; and `toolrl eval`
with no backend flag says which engine it chose and why."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.config import load_config
from toolrl.rollout.choice import choose_backend, vllm_install_problem, vllm_model_problem

HAS_VLLM_CPU = importlib.util.find_spec("vllm") is not None and vllm_install_problem(gpu=False) is None


def test_auto_is_the_default_and_explicit_names_are_kept() -> None:
    assert load_config().rollout.backend == "auto"
    for name in ("hf", "vllm"):
        choice = choose_backend(load_config(None, [f"rollout.backend={name}"]), "generate")
        assert choice.name == name and choice.reason == f"rollout.backend={name}"
        assert choice.header() == f"rollout engine: {name} (rollout.backend={name})"


def test_without_vllm_auto_falls_back_to_hf(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    choice = choose_backend(load_config(None, ["run.device=cpu"]), "generate")
    assert choice.name == "hf" and choice.reason == "auto: vLLM is not installed, so hf"
    train = choose_backend(load_config(None, ["run.device=cpu"]), "train")
    assert train.name == "hf" and "live weights" in train.reason


@pytest.mark.skipif(not HAS_VLLM_CPU, reason="vllm-cpu is not installed")
def test_the_installed_cpu_build_is_not_used_on_a_gpu() -> None:
    assert "CPU build" in (vllm_install_problem(gpu=True) or "")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM_CPU, reason="vllm-cpu is not installed")
def test_model_checks_use_vllms_own_lists(tiny_model_dir: Path) -> None:
    tiny = json.loads((tiny_model_dir / "config.json").read_text())  # hidden 64 / 4 heads: head size 16
    assert "head size 16" in (vllm_model_problem(tiny, gpu=False) or "")
    assert vllm_model_problem(tiny, gpu=True) is None  # the CPU kernel limit does not apply on GPU
    assert "architecture NoSuchLM" in (vllm_model_problem({**tiny, "architectures": ["NoSuchLM"]}, gpu=False) or "")
    choice = choose_backend(load_config(None, [f"model.path={tiny_model_dir}", "run.device=cpu"]), "generate")
    assert choice.name == "hf" and "head size 16" in choice.reason


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM_CPU, reason="vllm-cpu is not installed")
def test_eval_without_a_backend_flag_uses_vllm(tmp_path: Path, embedded_model_dir: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOOLRL_RUNS_DIR": str(tmp_path / "runs"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    res = subprocess.run([sys.executable, "-m", "toolrl.cli.main", "eval", "--bench", "arith", "--limit", "1",
                          "--out", str(run), "rollout.max_new_tokens=48", "rollout.vllm.max_model_len=1024"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "rollout engine: vllm (auto: vllm-cpu is installed and supports this model)" in res.stderr
    saved = json.loads((run / "results.json").read_text())
    assert saved["engine"]["name"] == "vllm" and saved["config"]["rollout"]["backend"] == "auto"
    assert "tok/s" in res.stderr and "calls/s" in res.stderr  # the moving bar's rates
