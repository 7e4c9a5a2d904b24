"""Multi-turn tool rollouts: engines that only generate (hf, vllm) behind one step protocol, and the one scheduler
that drives them (``run_rollouts``)."""

from __future__ import annotations

import importlib
from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.rollout.choice import BackendChoice, Purpose, choose_backend
from toolrl.rollout.engine import Engine, EngineCaps, GenOutput, GenRequest, SamplingSpec

# Heavy backends are imported only when chosen.
ENGINES = {
    "hf": "toolrl.rollout.hf_engine:build_hf_engine",
    "vllm": "toolrl.rollout.vllm_engine:build_vllm_engine",
}


def build_engine(cfg: RootConfig, model: Any = None, tokenizer: Any = None, purpose: Purpose = "generate",
                 choice: BackendChoice | None = None) -> Engine:
    """The engine ``cfg.rollout.backend`` names (``auto``: see ``toolrl.rollout.choice``).

    ``model`` is an in-memory transformers module holding the weights ``cfg.model`` points at (e.g. the policy being
    trained): engines with ``caps.shares_policy_weights`` generate with it directly; the others load ``cfg.model``
    and ignore it. The choice made is kept on the engine as ``engine.choice``.
    """
    choice = choice or choose_backend(cfg, purpose)
    mod_name, fn_name = ENGINES[choice.name].split(":")
    factory = getattr(importlib.import_module(mod_name), fn_name)
    engine = factory(cfg, model=model, tokenizer=tokenizer)
    engine.choice = choice
    return engine


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


def run_rollouts(problems: Any, **kwargs: Any) -> Any:
    """The one multi-turn scheduler for every engine: see ``toolrl.rollout.async_runner.run_rollouts``."""
    from toolrl.rollout.async_runner import run_rollouts as run

    return run(problems, **kwargs)


__all__ = ["BackendChoice", "Engine", "EngineCaps", "GenRequest", "GenOutput", "SamplingSpec", "build_engine",
           "choose_backend", "run_rollouts", "sampling_from_config"]
