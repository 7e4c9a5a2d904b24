"""`toolrl sweep` CLI: a sweep file routes to `run`, subcommands still work, W&B without a key fails clearly, and
a whole sweep (stand-in trainer) runs, summarises and resumes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from test_sweep_standin import launcher
from toolrl.cli.sweep_cmd import register
from toolrl.errors import ToolrlError
from toolrl.sweep.wandb_sweep import WandbUnavailableError

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: cli
axes: {tool.max_calls: [0, 2]}
base: {overrides: {train.steps: 3}}
seeds: [0, 1]
eval: {benchmarks: [arith]}
"""


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


@pytest.fixture
def spec_file(tmp_path) -> Path:
    p = tmp_path / "cli.yaml"
    p.write_text(SPEC)
    return p


def invoke(app, args, **env):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or None)


@pytest.mark.parametrize("order", ["file-first", "option-first", "explicit-run"])
def test_a_sweep_file_routes_to_run(app, spec_file, tmp_path, order):
    args = {"file-first": ["sweep", spec_file, "--dry-run", "--json"],
            "option-first": ["sweep", "--dry-run", "--json", spec_file],
            "explicit-run": ["sweep", "run", spec_file, "--dry-run", "--json"]}[order]
    res = invoke(app, [*args, "--out", tmp_path / "sw"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)
    assert [r["name"] for r in runs] == ["max_calls=0__seed=0", "max_calls=0__seed=1",
                                         "max_calls=2__seed=0", "max_calls=2__seed=1"]
    assert runs[0]["run_dir"] == str(tmp_path / "sw" / "runs" / "max_calls=0__seed=0")
    assert not (tmp_path / "sw").exists()  # a dry run creates nothing


def test_group_help_lists_subcommands(app):
    res = invoke(app, ["sweep", "--help"])
    assert res.exit_code == 0
    assert "summary" in res.output and "agent" in res.output and "run" in res.output


def test_invalid_spec_fails_before_any_run(app, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: {tool.max_call: [1, 2]}\n")
    res = invoke(app, ["sweep", bad, "--out", tmp_path / "sw"])
    assert isinstance(res.exception, ToolrlError)
    assert "tool.max_call" in res.exception.message and "tool.max_calls" in res.exception.hint
    assert not (tmp_path / "sw").exists()


def test_dry_run_rejects_what_a_training_run_would_reject(app, tmp_path):
    """A group-baseline algorithm with one sample per prompt passes no training run, so no dry-run either."""
    bad = tmp_path / "groups.yaml"
    bad.write_text("axes: {algo.n_samples: [1, 4]}\nbase: {overrides: {algo.name: grpo}}\n")
    res = invoke(app, ["sweep", bad, "--dry-run", "--out", tmp_path / "sw"])
    assert isinstance(res.exception, ToolrlError)
    assert "algo.n_samples >= 2" in res.exception.message and "n_samples=1" in res.exception.message
    assert res.exception.hint and not (tmp_path / "sw").exists()


def test_paper_exec_penalty_sweep_dry_run_uses_the_authors_rule(app, tmp_path):
    res = invoke(app, ["sweep", REPO / "sweeps" / "paper" / "torl_exec_penalty.yaml", "--dry-run", "--json",
                       "--out", tmp_path / "sw"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["values"]["reward.exec_error_penalty"] for r in runs] == [0.0, -0.5]
    assert all("reward.exec_penalty_rule=authors_code" in r["overrides"] for r in runs)
    assert not (tmp_path / "sw").exists()


def test_wandb_backend_and_agent_need_a_login(app, spec_file, tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(tmp_path / "none")}
    for args in (["sweep", spec_file, "--backend", "wandb"], ["sweep", "agent", "me/proj/abc123"]):
        res = invoke(app, args, **env)
        assert isinstance(res.exception, WandbUnavailableError), res.output
        assert "wandb login" in res.exception.hint


@pytest.mark.slow
def test_local_sweep_runs_summarises_and_resumes(app, spec_file, tmp_path):
    env = {"TOOLRL_SWEEP_LAUNCHER": shlex.join(launcher())}
    out = tmp_path / "sw"
    res = invoke(app, ["sweep", spec_file, "--out", out, "--json", "--threads", "1"], **env)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    acc = {p["point"]: p["metrics"]["eval/arith/acc"]["mean"] for p in summary["points"]}
    assert acc == {"max_calls=0": pytest.approx(0.2), "max_calls=2": pytest.approx(0.4)}  # the stand-in's values
    assert (out / "index.html").is_file() and (out / "curves.png").is_file()
    assert "4 finished" in res.stderr
    again = invoke(app, ["sweep", spec_file, "--out", out], **env)
    assert again.exit_code == 0 and "4 skipped" in again.stderr
    res = invoke(app, ["sweep", "summary", out, "--json", "--no-plots"])
    assert res.exit_code == 0 and json.loads(res.stdout)["points"] == summary["points"]


def test_failed_run_makes_the_command_fail_after_the_others(app, spec_file, tmp_path):
    env = {"TOOLRL_SWEEP_LAUNCHER": shlex.join(launcher()), "STANDIN_FAIL": "max_calls=0__seed=1"}
    res = invoke(app, ["sweep", spec_file, "--out", tmp_path / "sw"], **env)
    assert isinstance(res.exception, ToolrlError)
    assert "1 of 4 runs failed (first: max_calls=0__seed=1" in res.exception.message
    assert "3 finished" in res.stderr


def test_real_entry_point_prints_error_and_hint(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: {tool.max_calls: []}\n")
    res = subprocess.run([sys.executable, "-m", "toolrl.cli.main", "sweep", str(bad), "--dry-run"],
                         capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert res.returncode == 2, res.stderr
    assert "error: axis 'tool.max_calls' is empty" in res.stderr and "hint:" in res.stderr


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_runs(spec_file, tmp_path):
    """`kill` of a background sweep stops its runs too (they live in their own process groups)."""
    import signal
    import time

    out = tmp_path / "sw"
    env = {**os.environ, "TOOLRL_SWEEP_LAUNCHER": shlex.join(launcher()), "STANDIN_SLEEP": "0.5", "NO_COLOR": "1"}
    spec_file.write_text(SPEC.replace("train.steps: 3", "train.steps: 200"))
    proc = subprocess.Popen([sys.executable, "-m", "toolrl.cli.main", "sweep", str(spec_file), "--out", str(out)],
                            env=env, stderr=subprocess.PIPE, text=True)
    pid_file = out / "runs" / "max_calls=0__seed=0" / "pid.txt"
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "sweep interrupted" in err
    assert json.loads((out / "runs" / "max_calls=0__seed=0" / "sweep_status.json").read_text())["state"] == "interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the run's process is gone, not orphaned
