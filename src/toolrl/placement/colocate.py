"""Colocated rollouts (``rollout.placement=colocate``): the training ranks are the vLLM workers.

Every rank builds an engine with ``distributed_executor_backend="external_launcher"`` on the process group that
DeepSpeed already created. ``rollout.vllm.tensor_parallel_size`` consecutive ranks form one tensor-parallel engine;
the groups are data parallel. Within a TP group the engines must take identical steps, so one scheduler runs on
the group's first rank (the leader) for the problems of the whole group, and every ``submit`` / ``abort`` /
``step`` it makes is broadcast to the other ranks, which replay it on their shard of the engine. The trajectories
go back to the ranks that own their problems, in order. With TP=1 each rank is its own group and nothing is sent.

Weights go from DeepSpeed straight into the engine (``reload_weights`` with an iterator): under ZeRO-0/1/2 from the
module's ``state_dict()``; under ZeRO-3 one decoder layer at a time, gathered with ``deepspeed.zero.GatheredParameters``
and released before the next, so no rank ever holds the full model twice. The in-process engine's logprob check
runs after every sync. On CUDA the engine sleeps (level 1: weights to host memory, KV cache dropped) during the
update; sleep mode is CUDA-only, so on CPU that is a logged no-op.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from toolrl.placement.server import EngineCaps as ServerEngineCaps
from toolrl.rollout.engine import GenOutput, GenRequest, SamplingSpec
from toolrl.rollout.vllm_engine import VLLMEngine

if TYPE_CHECKING:
    import torch

    from toolrl.config.schema import RootConfig
    from toolrl.types import Problem, Trajectory

log = logging.getLogger("toolrl.placement")

_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


def layer_groups(names: Sequence[str]) -> "OrderedDict[str, list[str]]":
    """Parameter names grouped by decoder layer (``...layers.N.``); every other parameter is its own group.
    A whole layer must reach vLLM in one go: its fused q/k/v and gate/up weights are rebuilt from all parts.

    >>> list(layer_groups(["model.embed_tokens.weight", "model.layers.0.a", "model.layers.0.b", "model.layers.1.a",
    ...                    "lm_head.weight"]).values())
    [['model.embed_tokens.weight'], ['model.layers.0.a', 'model.layers.0.b'], ['model.layers.1.a'], ['lm_head.weight']]
    """
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for n in names:
        m = _LAYER.match(n)
        groups.setdefault(m.group(1) if m else n, []).append(n)
    return groups


def scheduler_entry(engine: Any, problems: Any, **kwargs: Any) -> Any:
    """The asynchronous multi-turn scheduler over ``engine`` (for trees whose rollout loop looks for an engine's own
    ``run_rollouts``)."""
    from toolrl.rollout.async_runner import run_async_rollouts

    return run_async_rollouts(problems, engine=engine, **kwargs)


class _WithExtras:
    """The vllm module, except that ``LLM(...)`` gets extra keyword arguments (the base engine builds the rest)."""

    def __init__(self, vllm: Any, extras: dict[str, Any]) -> None:
        self._vllm = vllm
        self._extras = extras

    def LLM(self, **kwargs: Any) -> Any:  # noqa: N802 - mirrors vllm.LLM
        return self._vllm.LLM(**{**kwargs, **self._extras})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vllm, name)


class TPGroup:
    """This rank's tensor-parallel group: its ranks, its leader, and a gloo group for control messages."""

    def __init__(self, rank: int, world: int, tp: int) -> None:
        import torch.distributed as dist

        self.rank, self.world, self.tp = rank, world, tp
        self.index = rank // tp  # the data-parallel group this rank belongs to
        self.ranks = list(range(self.index * tp, (self.index + 1) * tp))
        self.leader = self.ranks[0]
        self.pg = None
        if tp > 1:
            for g in range(world // tp):  # new_group is collective: every rank creates every group
                pg = dist.new_group(list(range(g * tp, (g + 1) * tp)), backend="gloo")
                if g == self.index:
                    self.pg = pg

    @property
    def is_leader(self) -> bool:
        return self.rank == self.leader

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=self.leader, group=self.pg)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.tp
        dist.all_gather_object(out, obj, group=self.pg)
        return out


class _MirrorLeader:
    """The leader's view of the engine: every request-level call is also sent to the group's other ranks."""

    def __init__(self, engine: "ColocatedEngine", group: TPGroup) -> None:
        self._engine = engine
        self._group = group
        self._ops: list[tuple[Any, ...]] = []
        self.name, self.caps = engine.name, getattr(engine, "caps", None)
        self.tokenizer, self.eos_token_ids = engine.tokenizer, engine.eos_token_ids

    @property
    def tokens_generated(self) -> int:
        return self._engine.tokens_generated

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        self._ops.append(("submit", key, req, spec))
        self._engine.submit(key, req, spec)

    def abort(self, keys: Sequence[str]) -> None:
        self._ops.append(("abort", list(keys)))
        self._engine.abort(keys)

    def step(self) -> list[tuple[str, GenOutput]]:
        ops, self._ops = self._ops, []
        self._group.broadcast(ops + [("step",)])
        return self._engine.step()

    def has_unfinished(self) -> bool:
        return self._engine.has_unfinished()

    def finish(self) -> None:
        self._group.broadcast(self._ops + [("stop",)])
        self._ops = []

    def close(self) -> None:  # the engine outlives one rollout
        pass

    def run_rollouts(self, problems: Any, **kwargs: Any) -> Any:
        return scheduler_entry(self, problems, **kwargs)


def _follow(engine: "ColocatedEngine", group: TPGroup) -> None:
    """Replay the leader's engine calls until it says stop."""
    while True:
        for op in group.broadcast(None):
            if op[0] == "submit":
                engine.submit(op[1], op[2], op[3])
            elif op[0] == "abort":
                engine.abort(op[1])
            elif op[0] == "step":
                engine.step()  # identical to the leader's outputs; the leader keeps those
            elif op[0] == "stop":
                return


class ColocatedEngine(VLLMEngine):
    """An external_launcher vLLM engine on a training rank (one shard of a TP group)."""

    name = "vllm-colocate"
    caps = ServerEngineCaps(shares_policy_weights=False, needs_weight_sync=True, returns_logprobs=True)
    gathers_params_itself = True  # the trainer must not gather a ZeRO-3 model for it (it goes layer by layer)

    def __init__(self, model_path: str, cfg: "RootConfig", tokenizer: Any = None, *, rank: int, world: int) -> None:
        tp = max(1, int(cfg.rollout.vllm.tensor_parallel_size))
        self.group = TPGroup(rank, world, tp)
        cfg = copy.deepcopy(cfg)
        # An external_launcher engine cannot be restarted inside the training process: weights are always reloaded
        # in place (a failed check is an error, not a rebuild).
        cfg.rollout.vllm.sync_mode = "inplace"
        self._slept = False
        self._said_no_sleep = False
        super().__init__(model_path, cfg, tokenizer)

    def _build(self, weights_path: str) -> Any:
        extras: dict[str, Any] = dict(
            distributed_executor_backend="external_launcher",
            tensor_parallel_size=self.group.tp,
            seed=self.cfg.rollout.seed + self.group.index,  # one seed per data-parallel group, shared by its TP ranks
        )
        if self.gpu:
            extras["enable_sleep_mode"] = True
        real = self._vllm
        self._vllm = _WithExtras(real, extras)
        try:
            llm = super()._build(weights_path)
        except RuntimeError as e:
            if "create shm" not in str(e):
                raise
            from toolrl.errors import ToolrlError

            raise ToolrlError(f"vLLM could not create its shared-memory segment for the TP group ({e})",
                              "a killed tensor-parallel CPU run leaves /dev/shm/*cpushm* behind: remove those of "
                              "runs that are no longer alive") from None
        finally:
            self._vllm = real
        if self.group.rank == 0:
            pc = llm.llm_engine.vllm_config.parallel_config
            log.warning(f"colocated vLLM: {self.group.world // self.group.tp} engine(s) x tensor parallel "
                        f"{pc.tensor_parallel_size} over {self.group.world} training ranks "
                        f"({pc.distributed_executor_backend})")
        return llm

    def _shutdown(self) -> None:
        # Only the engine: the process group is DeepSpeed's, and the run may still use it.
        self._stop_engine()

    # ------------------------------------------------------------------------------- rollouts in a TP group
    def run_in_group(self, problems: "Sequence[Problem]", n: int,
                     run: "Callable[[Sequence[Problem], Any], list[Trajectory]]") -> "list[Trajectory]":
        """``run(problems, engine)`` for this rank's problems; with TP > 1 the leader runs it for the whole group
        and each rank gets its own trajectories back, in order."""
        g = self.group
        if g.tp == 1:
            return run(problems, self)
        parts = g.gather(list(problems))
        trajs: list[Trajectory] | None = None
        if g.is_leader:
            mirror = _MirrorLeader(self, g)
            try:
                trajs = run([p for part in parts for p in part], mirror)
            finally:
                mirror.finish()
        else:
            _follow(self, g)
        trajs = g.broadcast(trajs)
        me = g.ranks.index(g.rank)
        start = sum(len(p) for p in parts[:me]) * n
        return trajs[start : start + len(parts[me]) * n]

    @contextmanager
    def solo(self) -> "Iterator[Any]":
        """Rank 0 generates alone (e.g. evaluation during training) while every other rank waits: rank 0 gets an
        engine whose calls its TP group replays; the group's other ranks replay them until rank 0 is done (they get
        None); ranks of other groups get None at once."""
        g = self.group
        if g.tp == 1 or g.index != 0:
            yield self if g.rank == 0 else None
            return
        if g.is_leader:
            mirror = _MirrorLeader(self, g)
            try:
                yield mirror
            finally:
                mirror.finish()
        else:
            _follow(self, g)
            yield None

    # ------------------------------------------------------------------------------- update and weights
    def sleep(self) -> None:
        """Free the GPU for the update (weights to host memory, KV cache dropped); a no-op on CPU."""
        if not self.gpu:
            if not self._said_no_sleep:
                log.warning("colocated vLLM keeps its memory during the update: sleep mode is CUDA-only")
                self._said_no_sleep = True
            return
        if not self._slept:
            self._llm.sleep(level=1)
            self._slept = True

    def wake(self) -> None:
        if self._slept:
            self._llm.wake_up()
            self._slept = False

    def sync_weights(self, source: Any) -> dict[str, Any]:
        self.wake()
        return super().sync_weights(source)

    def _weights(self, source: Any) -> "Iterator[tuple[str, torch.Tensor]]":
        module = source
        params = dict(module.named_parameters(remove_duplicate=False)) if hasattr(module, "named_parameters") else {}
        if not params or not any(hasattr(p, "ds_id") for p in params.values()):
            yield from super()._weights(source)  # a plain module or a saved directory: state_dict / files
            return
        import deepspeed

        for names in layer_groups(list(params)).values():
            tensors = list({id(params[n]): params[n] for n in names}.values())
            with deepspeed.zero.GatheredParameters(tensors, modifier_rank=None):
                # Copies: the gathered storage is released when the context exits, before vLLM has used it all.
                batch = [(n, params[n].data.detach().clone()) for n in names]
            yield from batch


def build_colocated_engine(cfg: "RootConfig", tokenizer: Any, rank: int, world: int) -> ColocatedEngine:
    from toolrl.errors import ConfigError
    from toolrl.models import resolve_model_path

    tp = max(1, int(cfg.rollout.vllm.tensor_parallel_size))
    if world % tp:
        raise ConfigError(f"rollout.vllm.tensor_parallel_size={tp} does not divide the {world} training ranks",
                          "pick a tensor_parallel_size that divides the number of ranks (`toolrl plan` checks layouts)")
    return ColocatedEngine(resolve_model_path(cfg.model), cfg, tokenizer, rank=rank, world=world)


__all__ = ["ColocatedEngine", "TPGroup", "build_colocated_engine", "layer_groups"]
