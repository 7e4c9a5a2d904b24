"""Data end to end with real models (slow): a verl parquet of benchmarks through `toolrl eval`, build-sft with the
embedded model as teacher on the local hf engine, and `toolrl train` on a built SFT file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_support.scripted import twenty_rows
from data_support.teacher_server import ScriptedTeacher
from data_support.verl import write_torl_parquet

pytestmark = pytest.mark.slow

_RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _cli(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "TOOLRL_RUNS_DIR": str(cwd / "runs")})
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_eval_verl_parquet_per_data_source(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    bench = write_torl_parquet(data_dir, tmp_path / "torl_test.parquet")
    run = tmp_path / "run"
    res = _cli("eval", "--bench", str(bench), "--model", str(tiny_model_dir), "--limit", "1", "--out", str(run),
               "--json", "rollout.max_new_tokens=8", "prompt.template=dataset", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "aime24: 30 unique problems x4" in res.stderr and "aime25: 30 unique problems x4" in res.stderr
    assert "per data_source" in res.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["num_problems"] == 3 and results["metrics"]["num_samples"] == 3  # each once, not x4
    assert set(results["by_source"]) == {"aime24", "aime25", "math500"}
    assert all(m["num_problems"] == 1 and "pass@1" in m for m in results["by_source"].values())
    trajs = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    assert all("Please reason step by step" in t["prompt_text"] for t in trajs)  # the parquet's own system prompt


def test_build_sft_with_the_embedded_model_as_teacher(embedded_model_dir: Path, tmp_path: Path) -> None:
    rows, _, _ = twenty_rows()
    src = tmp_path / "two.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = tmp_path / "sft.jsonl"
    res = _cli("data", "build-sft", str(src), "-o", str(out), "--max-tokens", "48", "--json", "--concurrency", "2",
               "--set", "tool.format=retool", "--set", "sandbox.pool_size=1", "--set", "rollout.backend=hf",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert sum(report["run"].values()) == 2 and report["input_rows"] == 2  # every row accounted for
    assert "SmolLM2" in report["teacher"]
    kept, drops = _jsonl(out), _jsonl(tmp_path / "sft.drops.jsonl")
    assert len(kept) + len(drops) == 2 - sum(report["retry"].values())
    assert all(d["reason"] and d["teacher_text"] is not None for d in drops)


def test_train_with_a_built_sft_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    from toolrl.config import load_config
    from toolrl.data.build_sft import SFTBuilder, load_template
    from toolrl.data.readers import load_problem_set
    from toolrl.data.teachers import OpenAITeacher
    from toolrl.sandbox import build_sandbox
    from toolrl.tracking import read

    rows, answers, _ = twenty_rows()
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    cfg = load_config(overrides=["tool.format=retool", "sandbox.pool_size=1"])
    pset = load_problem_set(str(src), cfg.data, "train")
    built = tmp_path / "cold_start.jsonl"
    sandbox = build_sandbox(cfg)
    try:
        with ScriptedTeacher(answers) as server:
            teacher = OpenAITeacher(server.base_url)
            SFTBuilder(cfg, teacher, sandbox, load_template(None, "retool"), built).run(
                [(p, p.meta["solution"]) for p in pset.problems])
            teacher.close()
    finally:
        sandbox.close()
    assert len(_jsonl(built)) == 8

    run = tmp_path / "train"
    res = _cli("train", "--out", str(run), "sft.enabled=true", f"sft.data={built}", f"model.path={tiny_model_dir}",
               "tool.format=retool", "run.device=cpu", "tracking.wandb=false", "train.steps=1", "train.prompts_per_step=2",
               "algo.n_samples=2", "algo.mini_batch_size=4", "algo.micro_batch_size=2", "rollout.max_new_tokens=8",
               "rollout.batch_size=4", "sandbox.pool_size=1", "sft.max_examples=8", "sft.batch_size=4",
               "data.arith_size=16", "train.save_every=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "sft" / "model").is_dir()
    sft_records = [r for r in read(run) if "sft/loss" in r]
    assert len(sft_records) == 2 and all(r["sft/tokens"] > 0 for r in sft_records)  # 8 examples / batch 4
