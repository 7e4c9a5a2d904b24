"""The shipped paper recipes run on CPU with the embedded model (slow): two RL steps of torl_1p5b and retool_32b on
the full training set with small batch and length overrides, and a ToRL-config evaluation that scores every one of
aime25's 30 problems. A small rollout.max_prompt_tokens proves that long prompts are dropped at load, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.train.runner import Hooks

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOOLRL_DATA_DIR", "/work/shared/data"))
needs_data = pytest.mark.skipif(not (DATA / "train" / "math_aime_train.jsonl").is_file(),
                                reason="the shared training set (TOOLRL_DATA_DIR/train) is not on this machine")

# CPU-sized: the embedded SmolLM2-135M-Instruct (empty model.path), hf rollouts, no ZeRO, tiny batches and lengths.
SMALL = ["model.path=null", "model.dtype=auto", "run.device=cpu", "rollout.backend=hf", "rollout.placement=local", "rollout.max_new_tokens=32",
         "rollout.batch_size=4", "train.steps=2", "train.prompts_per_step=2", "algo.n_samples=2",
         "algo.mini_batch_size=4", "algo.micro_batch_size=2", "deepspeed.zero_stage=0",
         "deepspeed.offload_optimizer=false", "train.gradient_checkpointing=false", "train.save_every=2",
         "train.keep_checkpoints=1", "tracking.wandb=false", "sandbox.pool_size=2", "eval.during_train_bench=null",
         f"data.dir={DATA}", "data.train=train"]


class Phases(Hooks):
    """Keeps the run's phase lines (the training-set filter reports itself in one)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def phase(self, text: str) -> None:
        self.lines.append(text)


@needs_data
@pytest.mark.parametrize(("recipe", "max_prompt", "extra"), [
    ("torl_1p5b", 150, []),
    ("retool_32b", 330, ["sft.enabled=false"]),  # the cold start needs sft.data; RL alone here
])
def test_paper_recipe_trains_two_steps_on_the_full_training_set(recipe: str, max_prompt: int, extra: list[str],
                                                                 tmp_path: Path) -> None:
    from toolrl.config.loader import load_config
    from toolrl.eval.benchmarks import read_jsonl
    from toolrl.tracking import read
    from toolrl.train import train

    cfg = load_config(recipe, [*SMALL, f"rollout.max_prompt_tokens={max_prompt}", *extra])
    hooks = Phases()
    final = train(cfg, tmp_path / "run", hooks=hooks)  # type: ignore[arg-type]
    assert (final / "config.json").is_file()

    total = len(read_jsonl(DATA / "train" / "math_aime_train.jsonl"))
    records = [r for r in read(tmp_path / "run") if r.get("step", 0) >= 1 and "reward/mean" in r]
    assert [r["step"] for r in records] == [1, 2]
    dropped = records[0]["data/prompts_filtered"]
    assert 0 < dropped < total  # the filter ran, and left problems to train on
    assert any(f"{total - int(dropped)} of {total} problems; {int(dropped)} dropped" in line for line in hooks.lines)
    for step in (1, 2):
        rows = [json.loads(x) for x in (tmp_path / "run" / "rollouts" / f"step_{step:06d}.jsonl").read_text().splitlines()]
        assert rows and all(len(r["prompt_ids"]) <= max_prompt for r in rows)


@needs_data
def test_torl_eval_scores_every_aime25_problem(tmp_path: Path) -> None:
    """aime25 has prompts over the 390-token training filter (aime25-I-2 is 607 tokens with Qwen's tokenizer):
    evaluation must still score all 30, within the model's context."""
    env = {**os.environ, "WANDB_MODE": "disabled", "TOOLRL_DATA_DIR": str(DATA), "PYTHONPATH": str(REPO / "src")}
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "toolrl.cli.main", "eval", "--config", "torl_1p5b", "--bench", "aime25", "--out",
         str(out), "model.path=null", "model.dtype=auto", "run.device=cpu", "rollout.backend=hf", "rollout.placement=local",
         "rollout.max_new_tokens=16", "rollout.batch_size=32", "sandbox.pool_size=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["problems_scored"] == results["problems_in_benchmark"] == 30
    rollouts = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len({r["problem"]["id"] for r in rollouts}) == 30
    assert max(len(r["prompt_ids"]) for r in rollouts) > 390  # a prompt training would have dropped was scored
    assert "scored 30 of the 30 problems of aime25" in proc.stderr
