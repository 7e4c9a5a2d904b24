"""The trainer's rollout engine for ``rollout.placement`` (local, colocate, server), built on every rank."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolrl.errors import ConfigError

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

SYNC_DIR = "rollout_weights"  # under the run directory: where servers reload the trainer's weights from


def check_placement(cfg: "RootConfig", world_size: int) -> None:
    """Layout rules that hold before anything starts (the memory side is ``toolrl plan``)."""
    r = cfg.rollout
    if r.backend != "vllm":
        return
    tp = max(1, int(r.vllm.tensor_parallel_size))
    if r.placement == "local" and world_size > 1:
        raise ConfigError(f"rollout.placement=local runs one in-process vLLM engine, but this run has {world_size} "
                          "ranks", "use rollout.placement=colocate (an engine on every rank) or rollout.placement=server")
    if r.placement == "colocate":
        if world_size % tp:
            raise ConfigError(f"rollout.vllm.tensor_parallel_size={tp} does not divide the {world_size} training ranks",
                              "pick a tensor_parallel_size that divides the number of ranks")
    if r.placement == "server" and not r.servers:
        raise ConfigError("rollout.placement=server needs rollout.servers",
                          "start servers with `toolrl serve --config X` and pass rollout.servers=[http://HOST:PORT]")


def build_rollout_engine(cfg: "RootConfig", strategy: Any, tokenizer: Any, run_dir: str | Path) -> Any:
    """The vLLM engine of the configured placement (``cfg.model.path`` names the weights it starts from)."""
    check_placement(cfg, strategy.world_size)
    placement = cfg.rollout.placement
    if placement == "colocate":
        from toolrl.placement.colocate import build_colocated_engine

        return build_colocated_engine(cfg, tokenizer, strategy.rank, strategy.world_size)
    if placement == "server":
        from toolrl.placement.server import ServerEngine

        return ServerEngine(cfg, cfg.rollout.servers, tokenizer, sync_dir=Path(run_dir).resolve() / SYNC_DIR,
                            is_main=strategy.is_main, broadcast=strategy.broadcast)
    from toolrl.rollout import build_engine

    return build_engine(cfg, tokenizer=tokenizer)


__all__ = ["build_rollout_engine", "check_placement"]
