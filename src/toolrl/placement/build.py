"""The trainer's rollout engine for ``rollout.placement`` (local, colocate, server), built on every rank."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolrl.errors import ConfigError

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig
    from toolrl.rollout.choice import BackendChoice

SYNC_DIR = "rollout_weights"  # under the run directory: where servers reload the trainer's weights from


def check_placement(cfg: "RootConfig", world_size: int, backend: str | None = None) -> None:
    """Layout rules that hold before anything starts (the memory side is ``toolrl plan``).

    ``backend`` is the engine ``rollout.backend`` resolved to (``auto`` is only known once the model is at hand);
    without it an ``auto`` backend is checked by the rules every placement shares.
    """
    r = cfg.rollout
    backend = backend or r.backend
    if r.placement != "local" and backend == "hf":
        raise ConfigError(f"rollout.placement={r.placement} places vLLM engines, but the rollout engine is hf",
                          "set rollout.backend=vllm (or auto), or rollout.placement=local")
    if backend == "hf":
        return
    tp = max(1, int(r.vllm.tensor_parallel_size))
    if r.placement == "local" and world_size > 1 and backend == "vllm":
        raise ConfigError(f"rollout.placement=local runs one in-process vLLM engine, but this run has {world_size} "
                          "ranks", "use rollout.placement=colocate (an engine on every rank) or rollout.placement=server")
    if r.placement == "colocate":
        if world_size % tp:
            raise ConfigError(f"rollout.vllm.tensor_parallel_size={tp} does not divide the {world_size} training ranks",
                              "pick a tensor_parallel_size that divides the number of ranks")
    if r.placement == "server" and not r.servers:
        raise ConfigError("rollout.placement=server needs rollout.servers",
                          "start servers with `toolrl serve --config X` and pass rollout.servers=[http://HOST:PORT]")


def build_rollout_engine(cfg: "RootConfig", strategy: Any, tokenizer: Any, run_dir: str | Path,
                         choice: "BackendChoice | None" = None) -> Any:
    """The vLLM engine of the configured placement (``cfg.model.path`` names the weights it starts from)."""
    from toolrl.rollout import build_engine
    from toolrl.rollout.choice import BackendChoice

    choice = choice or BackendChoice("vllm", f"rollout.placement={cfg.rollout.placement}")
    check_placement(cfg, strategy.world_size, choice.name)
    placement = cfg.rollout.placement
    if placement == "colocate":
        from toolrl.placement.colocate import build_colocated_engine

        engine = build_colocated_engine(cfg, tokenizer, strategy.rank, strategy.world_size)
    elif placement == "server":
        from toolrl.placement.server import ServerEngine

        engine = ServerEngine(cfg, cfg.rollout.servers, tokenizer, sync_dir=Path(run_dir).resolve() / SYNC_DIR,
                              is_main=strategy.is_main, broadcast=strategy.broadcast)
    else:
        return build_engine(cfg, tokenizer=tokenizer, choice=choice)
    engine.choice = choice
    return engine


__all__ = ["build_rollout_engine", "check_placement"]
