"""Multi-turn tool rollouts: engines (hf, vllm) behind one protocol, and the schedulers that drive them."""

from __future__ import annotations

import importlib
from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.rollout.engine import Engine, GenOutput, GenRequest, SamplingSpec

# Heavy backends are imported only when chosen.
ENGINES = {
    "hf": "toolrl.rollout.hf_engine:build_hf_engine",
    "vllm": "toolrl.rollout.vllm_engine:build_vllm_engine",
}


def build_engine(cfg: RootConfig, model: Any = None, tokenizer: Any = None) -> Engine:
    """The engine named by ``cfg.rollout.backend``.

    With ``model`` (an in-memory transformers module, e.g. the policy being trained) the hf engine generates with
    it directly; the vllm engine loads weights from ``cfg.model`` and is synced with ``sync_weights``.
    """
    target = ENGINES[cfg.rollout.backend]
    mod_name, fn_name = target.split(":")
    factory = getattr(importlib.import_module(mod_name), fn_name)
    return factory(cfg, model=model, tokenizer=tokenizer)


def sampling_from_config(cfg: RootConfig, greedy: bool = False, temperature: float | None = None,
                         top_p: float | None = None) -> SamplingSpec:
    if greedy:
        return SamplingSpec(temperature=0.0, top_p=1.0, top_k=0, seed=cfg.rollout.seed)
    return SamplingSpec(
        temperature=cfg.rollout.temperature if temperature is None else temperature,
        top_p=cfg.rollout.top_p if top_p is None else top_p,
        top_k=cfg.rollout.top_k,
        seed=cfg.rollout.seed,
    )


__all__ = ["Engine", "GenRequest", "GenOutput", "SamplingSpec", "build_engine", "sampling_from_config"]
