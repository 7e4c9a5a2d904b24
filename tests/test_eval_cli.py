"""`toolrl eval`: fast checks of its errors and options; one slow end-to-end run with a tiny model and the real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolrl.cli.eval_cmd import _shortcuts
from toolrl.cli.main import app
from toolrl.config import load_config
from toolrl.errors import DataError

runner = CliRunner()


def test_unknown_bench_fails_before_loading_a_model(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "--bench", "aime2024", "--out", str(tmp_path / "r")])
    assert isinstance(res.exception, DataError) and "aime24" in (res.exception.hint or "")
    assert not (tmp_path / "r").exists()


def test_shortcuts_are_config_overrides() -> None:
    cfg = load_config(overrides=_shortcuts("runs/my data.jsonl", "Qwen/Qwen2.5-Math-1.5B", 4, 10))
    assert (cfg.eval.bench, cfg.model.path, cfg.eval.n, cfg.eval.limit) == (
        "runs/my data.jsonl", "Qwen/Qwen2.5-Math-1.5B", 4, 10)


def _toolrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOOLRL_RUNS_DIR": str(cwd / "runs")}
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_eval_end_to_end_on_arith(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _toolrl("eval", "--bench", "arith", "--model", str(tiny_model_dir), "--n", "2", "--limit", "2",
                  "--out", str(run), "--json", "rollout.max_new_tokens=24", "rollout.temperature=1.0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    printed = json.loads(res.stdout)
    saved = json.loads((run / "results.json").read_text())
    assert printed["metrics"] == saved["metrics"]
    m = saved["metrics"]
    assert (m["num_problems"], m["num_samples"]) == (2, 4)
    assert {"avg@2", "pass@1", "pass@2", "maj@2", "code/share", "code/success_rate", "response/len"} <= set(m)
    assert 0.0 <= m["avg@2"] <= m["pass@2"] <= 1.0
    lines = (run / "rollouts.jsonl").read_text().splitlines()
    assert len(lines) == 4
    trajs = [json.loads(x) for x in lines]
    assert all(t["reward"] in (1.0, -1.0) and t["correct"] is not None for t in trajs)
    assert all(len(t["response_ids"]) == len(t["loss_mask"]) <= 24 for t in trajs)
    assert [(t["problem"]["id"], t["sample_index"]) for t in trajs] == [
        ("arith-test-0", 0), ("arith-test-0", 1), ("arith-test-1", 0), ("arith-test-1", 1)]
    assert (run / "config.yaml").is_file() and "run dir:" in res.stderr

    # n = 1 is greedy pass@1
    res = _toolrl("eval", "-b", "arith", "-m", str(tiny_model_dir), "-l", "1", "-o", str(tmp_path / "g"),
                  "rollout.max_new_tokens=16", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    greedy = json.loads((tmp_path / "g" / "results.json").read_text())
    assert greedy["sampling"]["temperature"] == 0 and "pass@1" in greedy["metrics"]

    res = _toolrl("inspect", "rollout", str(run), "--tokens", "--limit", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "GROUND TRUTH" in res.stdout and "TOKENS" in res.stdout
