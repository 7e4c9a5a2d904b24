"""Evaluation during training (eval.n / temperature / top_p), checkpoints as model directories, snapshots and
pruning on finish. Fast tests use the tiny random Llama and DeepSpeed-layout files written with torch; the slow
test trains through the real CLI and evaluates an intermediate checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolrl.config import load_config
from toolrl.eval import eval_protocol
from toolrl.rollout.engine import BatchedSteps, GenOutput, GenRequest, SamplingSpec
from toolrl.train import checkpoint as ckpt
from toolrl.train.disk import kept_summary
from toolrl.train.export import MODEL_CONFIG, export_checkpoint, model_dir_for

REPO = Path(__file__).resolve().parents[1]


# -- evaluation protocol ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("temperature", [None, 0.0, 0.7])
@pytest.mark.parametrize("top_p", [None, 0.9])
def test_eval_protocol_rules(n: int, temperature: float | None, top_p: float | None) -> None:
    over = [f"eval.n={n}", "rollout.temperature=1.3", "rollout.top_p=0.95"]
    over += [f"eval.temperature={temperature}"] if temperature is not None else []
    over += [f"eval.top_p={top_p}"] if top_p is not None else []
    k, sampling, label = eval_protocol(load_config(None, over))
    assert k == n
    if n == 1 and temperature is None:  # greedy pass@1 unless a temperature is asked for
        assert (sampling.temperature, sampling.top_p, label) == (0.0, 1.0, "greedy pass@1")
    else:
        assert sampling.temperature == (1.3 if temperature is None else temperature)
        assert sampling.top_p == (0.95 if top_p is None else top_p)
        assert label.startswith(f"n={n} ")


class AnswerEngine:
    """Answers every request at once: even samples give the right answer, odd ones a wrong one. Records the
    sampling spec of each call."""

    def __init__(self, tokenizer, answers: dict[str, str]) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.answers = answers
        self.specs: list[SamplingSpec] = []
        self.request_ids: list[str] = []

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        outs = []
        for r in requests:
            self.specs.append(sampling)
            self.request_ids.append(r.request_id)
            pid, sample = r.request_id.rsplit("#", 1)
            answer = self.answers[pid] if int(sample) % 2 == 0 else "-1"
            ids = self.tokenizer(f"So \\boxed{{{answer}}}.", add_special_tokens=False)["input_ids"]
            outs.append(GenOutput(ids + [self.tokenizer.eos_token_id], "eos"))
        return outs

    def close(self) -> None:
        pass


class OneProcess:
    """The Strategy surface Run._evaluate uses, for a single process without DeepSpeed."""

    is_main = True

    def gathered_params(self, module: object) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def barrier(self) -> None:
        pass


@pytest.mark.parametrize("n,temperature", [(1, None), (4, 0.6)])
def test_periodic_evaluation_follows_eval_n_and_sampling(tokenizer, n: int, temperature: float | None) -> None:
    from toolrl.eval import load_problems
    from toolrl.train.runner import Hooks, Run

    over = ["eval.during_train_bench=arith", "eval.during_train_limit=3", f"eval.n={n}", "eval.top_p=0.8"]
    over += [f"eval.temperature={temperature}"] if temperature is not None else []
    cfg = load_config(None, over)
    problems = load_problems("arith", cfg, 3)
    engine = AnswerEngine(tokenizer, {p.id: p.answer for p in problems})
    run = Run.__new__(Run)  # only the evaluation: no DeepSpeed, no model
    run.cfg, run.strategy, run.hooks = cfg, OneProcess(), Hooks()
    metrics = run._evaluate(BatchedSteps(engine), type("Policy", (), {"module": None})(), sandbox=None)

    assert len(engine.request_ids) == len(set(engine.request_ids)) == 3 * n  # n trajectories per problem
    expected = SamplingSpec(0.0, 1.0, 0, cfg.rollout.seed) if n == 1 else SamplingSpec(temperature, 0.8, 0, cfg.rollout.seed)
    assert engine.specs and all(s == expected for s in engine.specs)
    assert metrics["eval/arith/num_samples"] == 3 * n
    if n == 1:
        assert metrics["eval/arith/pass@1"] == 1.0  # sample 0 is always right
    else:  # samples 0 and 2 of 4 are right: avg@4 = 0.5, pass@4 = 1, every metric under eval/arith/
        assert metrics["eval/arith/avg@4"] == 0.5 and metrics["eval/arith/pass@4"] == 1.0
        assert {"eval/arith/pass@2", "eval/arith/maj@4", "eval/arith/acc"} <= set(metrics)


# -- checkpoints as model directories ---------------------------------------------------------------------------

def _fake_run(tmp_path: Path, tiny_model_dir: Path, stage: int, steps: tuple[int, ...] = (1, 2)) -> Path:
    """A run directory whose checkpoints have DeepSpeed's file layout for ``stage``, holding the tiny model's
    weights (scaled by the step, so each checkpoint differs) and an optimizer state twice their size."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / f"run{stage}"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    for step in steps:
        sd = {k: v * (1 + step) for k, v in model.state_dict().items()}
        optim = {"state": {k: (torch.zeros_like(v), torch.ones_like(v)) for k, v in sd.items()}}

        def write(d: Path) -> None:
            tag = d / "policy" / "state"
            tag.mkdir(parents=True)
            if stage == 0:
                torch.save({"module": sd, "optimizer": optim, "lr_scheduler": {"last_epoch": step}},
                           tag / "mp_rank_00_model_states.pt")
            else:
                torch.save({"module": sd, "optimizer": None}, tag / "mp_rank_00_model_states.pt")
                torch.save({"optimizer_state_dict": optim}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
            model.config.save_pretrained(d / MODEL_CONFIG)
            tok.save_pretrained(d / MODEL_CONFIG)

        ckpt.save(run / "checkpoints", step, {"step": step, "world_size": 1}, write, keep=5)
    return run


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).state_dict()


@pytest.mark.parametrize("stage", [0, 2])
def test_checkpoint_exports_its_own_weights(tiny_model_dir: Path, tmp_path: Path, stage: int) -> None:
    run = _fake_run(tmp_path, tiny_model_dir, stage)
    base = _weights(tiny_model_dir)
    out = export_checkpoint(run / "checkpoints" / "step_000001", tmp_path / "out")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    got = _weights(out)
    assert all(torch.equal(got[k], 2 * base[k]) for k in base)
    half = export_checkpoint(run / "checkpoints" / "step_000001", tmp_path / "half", dtype="bfloat16")
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"
    assert (half / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size


def test_model_paths_resolve_runs_and_checkpoints(tiny_model_dir: Path, tmp_path: Path) -> None:
    from toolrl.errors import ModelError
    from toolrl.models import resolve_model_path

    run = _fake_run(tmp_path, tiny_model_dir, 0)
    cache = tmp_path / "cache"
    step1 = model_dir_for(run / "checkpoints" / "step_000001", cache)
    assert step1 is not None and step1.is_relative_to(cache / "exports")
    assert model_dir_for(run / "checkpoints" / "step_000001", cache) == step1  # exported once
    newest = model_dir_for(run, cache)  # a run without final/: its newest checkpoint
    assert newest is not None and newest.name.startswith("step_000002")
    assert model_dir_for(tmp_path / "run0" / "checkpoints", cache) == newest
    assert model_dir_for(tmp_path, cache) is None

    cfg = load_config(None, [f"model.path={run / 'checkpoints' / 'step_000002'}", f"model.cache_dir={cache}"])
    assert resolve_model_path(cfg.model) == str(newest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as err:
        resolve_model_path(load_config(None, [f"model.path={tmp_path / 'empty'}"]).model)
    assert "checkpoints/step_N" in (err.value.hint or "")


@pytest.mark.parametrize("stage", [0, 2])
def test_pruning_a_finished_run_keeps_what_resume_and_eval_need(tiny_model_dir: Path, tmp_path: Path,
                                                                 stage: int) -> None:
    run = _fake_run(tmp_path, tiny_model_dir, stage)
    root = run / "checkpoints"
    assert ckpt.prune_finished(root, run / "final") == 0  # no final model yet: nothing may go
    before = {p.name: ckpt.tree_size(p) for p in root.glob("step_*")}
    export_checkpoint(root / "step_000002", run / "final")
    freed = ckpt.prune_finished(root, run / "final")

    after = {p.name: ckpt.tree_size(p) for p in root.glob("step_*")}
    assert sum(after.values()) < sum(before.values()) / 2
    assert abs(freed - (sum(before.values()) - sum(after.values()))) < 1024  # up to the state file's own growth
    old, new = root / "step_000001", root / "step_000002"
    # the older checkpoint keeps its weights without optimizer states, and still exports
    assert not list(old.rglob("*optim_states.pt"))
    module = torch.load(old / "policy" / "state" / "mp_rank_00_model_states.pt", weights_only=False)
    assert module["optimizer"] is None and module["module"]
    assert ckpt.read_state(old)["pruned"]["freed_bytes"] > 0
    # the newest keeps its resume state and names final/ for its weights
    assert not (new / "policy").exists() and ckpt.is_complete(new) and ckpt.latest(root) == new
    assert ckpt.read_state(new)["pruned"]["policy_weights"] == ckpt.PRUNED_POLICY
    assert model_dir_for(new, tmp_path / "cache") == run / "final"
    assert model_dir_for(run, tmp_path / "cache") == run / "final"  # `--model RUN`: its final model
    got, base = _weights(model_dir_for(old, tmp_path / "cache")), _weights(tiny_model_dir)  # type: ignore[arg-type]
    assert all(torch.equal(got[k], 2 * base[k]) for k in base)
    line = kept_summary(run)
    assert line.startswith("kept ") and "final/" in line and "checkpoints/step_000002/" in line
    assert "weights in final/" in line and "pruned" in line


def test_zero3_partitions_are_never_stripped(tmp_path: Path) -> None:
    tag = tmp_path / "policy" / "state"
    tag.mkdir(parents=True)
    torch.save({"module": {}}, tag / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    torch.save({"fp32_flat_groups": [torch.ones(8)]}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert ckpt.strip_optimizer_states(tmp_path / "policy") == 0
    assert (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()


# -- end to end through the CLI -----------------------------------------------------------------------------

def _toolrl(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_train_then_evaluate_an_intermediate_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`toolrl train` with in-training avg@2, checkpoints every step and bf16 snapshots; the finished run is
    pruned; `toolrl eval --model RUN/checkpoints/step_000001` evaluates that checkpoint's weights; the pruned
    run still resumes."""
    from toolrl.tracking import read

    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "TOOLRL_CACHE": str(tmp_path / "cache")}
    common = [f"model.path={tiny_model_dir}", "run.device=cpu", "tracking.wandb=false", "data.train=arith",
              "data.arith_size=32", "train.prompts_per_step=2", "algo.n_samples=2", "algo.mini_batch_size=4",
              "algo.micro_batch_size=4", "train.lr=1e-3", "algo.entropy_coef=0.01", "rollout.max_new_tokens=12",
              "sandbox.pool_size=1", "sft.enabled=false"]
    res = _toolrl("train", "--out", str(run), *common, "train.steps=2", "train.save_every=1",
                  "train.keep_checkpoints=2", "train.snapshot_every=1", "train.snapshot_dtype=bfloat16",
                  "eval.during_train_bench=arith", "eval.every=1", "eval.during_train_limit=2", "eval.n=2",
                  "eval.temperature=1.0", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    steps = [r for r in read(run) if r["step"] >= 1 and "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # avg@2 / pass@2 curves, logged every step
        assert r["eval/arith/num_samples"] == 4 and 0 <= r["eval/arith/avg@2"] <= r["eval/arith/pass@2"] <= 1

    step1, step2 = run / "checkpoints" / "step_000001", run / "checkpoints" / "step_000002"
    assert not list(step1.rglob("*optim_states.pt")) and not (step2 / "policy").exists()
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["step_000001", "step_000002"]
    assert json.loads((run / "snapshots" / "step_000001" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "kept " in res.stderr and "pruned " in res.stderr

    out = tmp_path / "eval1"
    res = _toolrl("eval", "--model", str(step1), "--bench", "arith", "--limit", "2", "--out", str(out),
                  "rollout.max_new_tokens=12", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert (results["metrics"]["num_problems"], results["metrics"]["num_samples"]) == (2, 2)
    assert len((out / "rollouts.jsonl").read_text().splitlines()) == 2
    evaluated = _weights(Path(results["model_dir"]))
    base, snap1, final = _weights(tiny_model_dir), _weights(run / "snapshots" / "step_000001"), _weights(run / "final")
    assert any(not torch.equal(evaluated[k], base[k]) for k in base)  # trained weights, not the base model's
    assert any(not torch.equal(evaluated[k], final[k]) for k in base)  # and step 1's, not the final model's
    assert all(torch.allclose(evaluated[k], snap1[k], atol=2e-2, rtol=1e-2) for k in base)  # = the bf16 snapshot

    # the pruned run continues (weights from final/, fresh optimizer) for one more step
    res = _toolrl("train", "--resume", str(run), "train.steps=3", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in read(run) if r["step"] >= 1 and "reward/mean" in r] == [1, 2, 3]
    assert ckpt.latest(run / "checkpoints").name == "step_000003"  # type: ignore[union-attr]


@pytest.mark.slow
def test_zero3_checkpoint_exports_the_merged_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real DeepSpeed ZeRO-3 checkpoint (weights spread over partition files) exports to the same model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl.config.schema import DeepSpeedConfig
    from toolrl.train.strategy import Strategy

    strategy = Strategy(DeepSpeedConfig(zero_stage=3), "cpu")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    engine = strategy.engine(model, lr=1e-3, weight_decay=0.0, warmup_steps=0, micro_batch=1)
    with strategy.gathered_params(engine.module):
        expected = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}

    def write(d: Path) -> None:
        engine.save_checkpoint(str(d / "policy"), tag="state", save_latest=False)
        model.config.save_pretrained(d / MODEL_CONFIG)
        AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(d / MODEL_CONFIG)

    root = tmp_path / "run" / "checkpoints"
    ckpt.save(root, 1, {"step": 1, "world_size": 1}, write)
    tag = root / "step_000001" / "policy" / "state"
    assert list(tag.glob("zero_pp_rank_0_mp_rank_00_model_states.pt"))  # really the ZeRO-3 layout
    got = _weights(export_checkpoint(root / "step_000001", tmp_path / "out"))
    assert all(torch.equal(got[k], expected[k]) for k in expected)
