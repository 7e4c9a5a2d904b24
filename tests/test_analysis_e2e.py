"""A real (tiny) `toolrl train` run, then `toolrl analyze` on its directory, both through the command line (slow)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _toolrl(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def test_train_then_analyze(tiny_model_dir: Path, tmp_path: Path) -> None:
    from toolrl.analysis.figures import DPI, SIZES

    run = tmp_path / "run"
    train = _toolrl(
        "train", "--out", str(run), f"model.path={tiny_model_dir}", "run.device=cpu", "tracking.wandb=false",
        "data.train=arith", "data.arith_size=32", "train.steps=2", "train.prompts_per_step=2", "algo.n_samples=2",
        "algo.mini_batch_size=4", "algo.micro_batch_size=4", "rollout.max_new_tokens=24", "rollout.batch_size=4",
        "sandbox.pool_size=1", "train.save_every=2", "sft.enabled=true", "sft.max_examples=4", "sft.batch_size=4",
        "train.log_rollouts=4",
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert sorted(p.name for p in (run / "rollouts").glob("step_*.jsonl")) == ["step_000001.jsonl", "step_000002.jsonl"]

    res = _toolrl("analyze", str(run), "--json", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(res.stdout)
    (series,) = data["series"]
    assert [p["x"] for p in series["points"]] == [1, 2]
    assert series["points"][0]["per_bench"]["train"]["n"] == 4
    assert data["timing_positions"] == "exact (run tokenizer)"
    assert "responses with code written" in res.stderr  # the Rich table
    out = run / "analysis"
    assert json.loads((out / "analysis.json").read_text())["series"][0]["name"] == "run"
    png = (out / "retool_fig3_code_behaviour.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    w, h = SIZES["retool_fig3_code_behaviour"]
    assert struct.unpack(">II", png[16:24]) == (int(w * DPI), int(h * DPI))
    page = (out / "analysis.html").read_text()
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png")))
