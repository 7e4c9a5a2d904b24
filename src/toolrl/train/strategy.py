"""DeepSpeed as the training engine: process environment, the config dict, engines, and collective helpers.

One process without the launcher works (the rendezvous variables are filled in), and so does the ``deepspeed``
launcher with several ranks (each rank then reads RANK/WORLD_SIZE/... from the launcher). deepspeed is imported
only inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from toolrl.config.schema import DeepSpeedConfig

_RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_env(cache_dir: str | Path | None = None) -> None:
    """Environment DeepSpeed needs before it is imported; values the user or the launcher set are kept.

    Without the launcher every rendezvous variable must be present, or DeepSpeed falls back to MPI discovery and
    fails on mpi4py. Its small shared-memory op is JIT-built once (~70 s) into TORCH_EXTENSIONS_DIR.
    """
    if not all(k in os.environ for k in _RENDEZVOUS):
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            missing = [k for k in _RENDEZVOUS if k not in os.environ]
            from toolrl.errors import ConfigError

            raise ConfigError(f"multi-process run without {', '.join(missing)}",
                              "start multi-process training with the `deepspeed` launcher (docs/training.md)")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # torch's own default location, made explicit so that every rank and every run reuses the one build.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cache_dir) if cache_dir else Path.home() / ".cache" / "torch_extensions"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on 2 shared cores: 20-80x step-time spikes
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def ds_config(ds: DeepSpeedConfig, *, micro_batch: int, world_size: int, on_gpu: bool, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config dict. Gradient accumulation is driven by the trainer (a mini-batch may hold any number
    of micro-batches after infra-failed trajectories are dropped), so DeepSpeed's own count stays 1.

    >>> c = ds_config(DeepSpeedConfig(zero_stage=2), micro_batch=4, world_size=1, on_gpu=False, bf16=False)
    >>> c["zero_optimization"]["stage"], c["train_batch_size"], c["bf16"]["enabled"]
    (2, 4, False)
    """
    zero: dict[str, Any] = {"stage": int(ds.zero_stage)}
    if ds.offload_optimizer and ds.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch * world_size,
        "gradient_clipping": float(ds.gradient_clipping),
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16 and on_gpu)},  # CPU trains in fp32: bf16 degrades small models there
        "zero_allow_untested_optimizer": True,  # we pass torch.optim.AdamW (no 2-minute CPUAdam build)
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class Strategy:
    """Owns the process group and builds DeepSpeed engines for the policy (and the critic)."""

    def __init__(self, ds: DeepSpeedConfig, device: str, bf16: bool = False) -> None:
        prepare_env()
        import deepspeed
        import torch.distributed as dist

        for name in ("DeepSpeed", "deepspeed"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.ds = ds
        self.device = device
        self.bf16 = bf16
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if device.startswith("cuda") else "gloo",
                                       verbose=False)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def engine(self, module: Any, *, lr: float, weight_decay: float, warmup_steps: int, micro_batch: int) -> Any:
        """Wrap ``module`` in a DeepSpeed engine with torch AdamW and a linear warm-up (then constant) schedule."""
        import deepspeed
        import torch

        params = [p for p in module.parameters() if p.requires_grad]
        try:  # the fused kernel (CPU and GPU) is several times faster than the per-tensor loop
            optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
        warm = max(0, int(warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / (warm + 1)) if warm else 1.0)
        config = ds_config(self.ds, micro_batch=micro_batch, world_size=self.world_size,
                           on_gpu=self.device.startswith("cuda"), bf16=self.bf16)
        _forget_stale_deepspeed_groups()
        engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optim, lr_scheduler=sched, config=config)
        return engine

    # -- collectives (no-ops in one process) ---------------------------------------------------------------
    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        return self._reduce(values, "sum")

    def all_max(self, values: list[float]) -> list[float]:
        return self._reduce(values, "max")

    def _reduce(self, values: list[float], op: str) -> list[float]:
        if self.world_size == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gathered_params(self, module: Any) -> Any:
        """A context in which a ZeRO-3 module holds its full weights (generation, saving); a no-op otherwise."""
        import contextlib

        if self.ds.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()


def _forget_stale_deepspeed_groups() -> None:
    """Drop DeepSpeed's cached world group when its process group no longer exists.

    Closing an in-process vLLM engine tears down torch.distributed (vLLM's worker destroys the distributed
    environment it joined); the next process group is new, but DeepSpeed keeps the old group object and a later
    ``deepspeed.initialize`` in the same process fails with "Group ... is not registered".
    """
    import torch.distributed as dist
    from deepspeed.utils import groups

    world = getattr(groups, "_WORLD_GROUP", None)
    if world is None or not dist.is_initialized():
        return
    try:
        dist.get_global_rank(world, 0)
    except (ValueError, RuntimeError):
        groups._WORLD_GROUP = None
