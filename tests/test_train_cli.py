"""`toolrl train` front end: configuration is validated before any work, errors are one line plus a hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.cli.train_cmd import load_train_config
from toolrl.config.loader import load_config
from toolrl.errors import ConfigError
from toolrl.train.launch import main as launch_main
from toolrl.train.runner import check

REPO = Path(__file__).resolve().parents[1]


def _train(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "TOOLRL_TRACEBACK": ""}
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_default_config_is_the_short_cpu_run() -> None:
    cfg = load_train_config(None, None, [])
    check(cfg)
    assert cfg.data.train == "arith" and cfg.sandbox.backend == "local" and cfg.rollout.backend == "hf"
    assert cfg.model.path is None  # the embedded model
    assert cfg.train.steps * cfg.train.prompts_per_step * cfg.algo.n_samples <= 256  # small enough for 2 cores


@pytest.mark.parametrize("name", ["torl_1p5b", "torl_7b", "retool_32b"])
def test_paper_recipes_validate(name: str) -> None:
    cfg = load_config(name)
    check(cfg)
    assert cfg.rollout.backend == "vllm"


def test_torl_recipe_matches_the_paper() -> None:
    cfg = load_config("torl_1p5b")
    assert (cfg.algo.name, cfg.algo.n_samples, cfg.train.prompts_per_step) == ("grpo", 16, 128)
    assert (cfg.train.lr, cfg.algo.kl_coef, cfg.tool.max_calls, cfg.rollout.max_new_tokens) == (1e-6, 0.0, 1, 3072)
    assert cfg.prompt.template == "raw" and not cfg.sft.enabled and cfg.rollout.temperature == 1.0


def test_training_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="n_samples"):
        check(load_config(None, ["algo.name=grpo", "algo.n_samples=1"]))
    with pytest.raises(ConfigError, match="ranks"):
        check(load_config(None, ["train.prompts_per_step=1"]), world_size=2)


def test_resume_of_a_missing_run_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _train("--resume", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_override_fails_before_any_work(tmp_path: Path) -> None:
    proc = _train("--out", str(tmp_path / "run"), "algo.n_samples=1")
    assert proc.returncode == 2 and "n_samples" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing was created


def test_launcher_entry_drops_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    import toolrl.cli.main as cli

    monkeypatch.setattr(cli, "main", lambda: seen.append(list(sys.argv)))
    launch_main(["--local_rank=1", "--out", "x", "train.steps=1"])
    assert seen == [["toolrl", "train", "--out", "x", "train.steps=1"]]
