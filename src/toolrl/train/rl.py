"""One RL step: sample problems, roll out with the tool, score, drop infra failures, update the policy.

An engine with ``caps.shares_policy_weights`` (hf) generates with the live policy module (no weight copy); one with
``caps.needs_weight_sync`` (vllm) gets the new weights through ``sync_weights`` after each update. Groups (the
samples of one problem) always live on one rank.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from toolrl.algos import zero_signal_mask
from toolrl.config.schema import RootConfig
from toolrl.sandbox.base import ExecResult, Sandbox
from toolrl.train.batch import group_ids_of, pack
from toolrl.train.data import ProblemStream, shard
from toolrl.train.select import loss_keep, roc_select, train_rewards
from toolrl.train.update import PolicyUpdater, UpdatePlan
from toolrl.types import Trajectory

if TYPE_CHECKING:
    from toolrl.rollout.progress import RolloutEvents


class TimedSandbox:
    """Counts the wall time during which at least one execution was running (calls of a turn overlap)."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.busy_s = 0.0

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            return self.inner.run(code, timeout_s=timeout_s, session=session)
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self.busy_s += time.perf_counter() - self._since

    def close_session(self, session: str) -> None:
        self.inner.close_session(session)

    def close(self) -> None:
        self.inner.close()


@dataclass
class StepResult:
    metrics: dict[str, float]
    trajectories: list[Trajectory]  # every rank's (gathered), in rank order


def select_for_update(trajs: list[Trajectory], filter_zero_signal: bool, *, roc_keep: int = 0,
                      rng: random.Random | None = None, tool_format: str = "torl") -> tuple[list[Trajectory], dict[str, float]]:
    """Drop infra-failed trajectories (not the model's fault), GRPO-RoC down-sampling (``roc_keep`` > 0: each group
    to that many samples) and, optionally, groups with no reward spread.

    Returns the kept trajectories and counts: ``train/infra_dropped``, ``groups/zero_signal`` (groups whose kept
    samples all got the same reward, singletons included), ``train/zero_signal_dropped``, ``roc/*``.
    """
    kept = [t for t in trajs if not t.infra_failed]
    stats = {"train/infra_dropped": float(len(trajs) - len(kept)), "groups/zero_signal": 0.0,
             "train/zero_signal_dropped": 0.0}
    if roc_keep > 0:
        kept, roc_stats = roc_select(kept, roc_keep, rng or random.Random(0), tool_format)
        stats.update(roc_stats)
    if not kept:
        return kept, stats
    gids = torch.tensor(group_ids_of(kept))
    rewards = torch.tensor([float(t.reward or 0.0) for t in kept])
    flat = zero_signal_mask(rewards, gids)
    stats["groups/zero_signal"] = float(torch.unique(gids[flat]).numel())
    if filter_zero_signal:
        stats["train/zero_signal_dropped"] = float(flat.sum().item())
        kept = [t for t, f in zip(kept, flat.tolist()) if not f]
    return kept, stats


def groups_with_signal(rewards: torch.Tensor, group_ids: torch.Tensor, rows: torch.Tensor | None = None) -> int:
    """Groups whose samples got different rewards and that still have a row in the loss (``rows``: (B,) bool):
    the only ones an outcome advantage can learn from."""
    if rewards.numel() == 0:
        return 0
    live = ~zero_signal_mask(rewards, group_ids)
    if rows is not None:
        live = live & rows
    return int(torch.unique(group_ids[live]).numel())


class RLStep:
    """Holds the engines of an RL run and performs steps. Built by :mod:`toolrl.train.runner`."""

    def __init__(self, cfg: RootConfig, *, strategy: Any, policy: Any, tokenizer: Any, rollout_engine: Any,
                 sandbox: Sandbox, stream: ProblemStream, critic: Any = None, ref: Any = None) -> None:
        self.cfg = cfg
        self.strategy = strategy
        self.policy = policy  # DeepSpeed engine
        self.tokenizer = tokenizer
        self.rollout_engine = rollout_engine
        self.sandbox = TimedSandbox(sandbox)
        self.stream = stream
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.updater = PolicyUpdater(policy, cfg.algo, cfg.rollout.temperature, critic=critic, ref=ref,
                                     reduce=lambda v, op: strategy.all_sum(v) if op == "sum" else strategy.all_max(v),
                                     world_size=strategy.world_size, max_len=cfg.rollout.max_new_tokens)
        self._step = 0

    def rollout(self, problems: list[Any], progress: "RolloutEvents | Callable[[Trajectory], None] | None" = None
                ) -> list[Trajectory]:
        from toolrl.reward import score
        from toolrl.rollout import run_rollouts, sampling_from_config
        from toolrl.rollout.progress import before_trajectory

        def on_done(t: Trajectory) -> None:
            score(t, self.cfg.reward, self.cfg.tool.format)

        sampling = sampling_from_config(self.cfg)
        # A different sampling seed per step and rank: the same seed would repeat the same samples every step.
        sampling.seed = None if sampling.seed is None else sampling.seed * 1_000_003 + self._step * 101 + self.strategy.rank
        # GRPO-RoC rolls out more samples per prompt than it trains on (roc_select keeps n_samples).
        n = self.cfg.algo.roc_oversample or self.cfg.algo.n_samples

        def run(ps: list[Any], engine: Any) -> list[Trajectory]:
            return run_rollouts(ps, engine=engine, sandbox=self.sandbox, cfg=self.cfg, sampling=sampling, n=n,
                                progress=before_trajectory(progress, on_done))

        with self._gathered(for_rollout=True):
            in_group = getattr(self.rollout_engine, "run_in_group", None)  # colocated TP groups share a scheduler
            trajs = in_group(problems, n, run) if callable(in_group) else run(problems, self.rollout_engine)
        for t in trajs:
            if t.reward is None:
                score(t, self.cfg.reward, self.cfg.tool.format)
        return trajs

    def run(self, step: int, progress: "RolloutEvents | Callable[[Trajectory], None] | None" = None) -> StepResult:
        from toolrl.tracking import rollout_metrics

        self._step = step
        t0 = time.perf_counter()
        problems = shard(self.stream.next(self.cfg.train.prompts_per_step), self.strategy.rank, self.strategy.world_size)
        sandbox_before = self.sandbox.busy_s
        trajs = self.rollout(problems, progress)
        t_rollout = time.perf_counter() - t0
        sandbox_s = self.sandbox.busy_s - sandbox_before

        algo = self.cfg.algo
        fmt = self.cfg.tool.format
        rng = random.Random(self.cfg.run.seed * 1_000_003 + step * 101 + self.strategy.rank)
        kept, select_stats = select_for_update(trajs, algo.filter_zero_signal, rng=rng, tool_format=fmt,
                                               roc_keep=algo.n_samples if algo.roc_oversample else 0)
        # Stabilisers that reweight rather than drop: shaped rewards (DAPO soft over-long punishment) and rows with
        # zero loss weight (SimpleTIR void turns, DAPO overlong filtering) that still count in their group's baseline.
        # The stats have the same keys on every rank (they are summed over ranks below), even with nothing kept.
        rewards, reward_stats = train_rewards(kept, algo, self.cfg.rollout.max_new_tokens)
        keep, keep_stats = loss_keep(kept, algo, fmt)
        select_stats.update(reward_stats)
        select_stats.update(keep_stats)
        batch = None
        if kept:
            batch = pack(kept, self.pad_id)
            batch.rewards = rewards
            batch.mask = batch.mask * torch.tensor(keep, dtype=batch.mask.dtype).unsqueeze(-1)
        # Ranks agree on whether anyone has something to learn from (else every rank skips the update).
        local_rows = float(batch.mask.any(-1).sum().item()) if batch is not None else 0.0
        total_kept = self.strategy.all_sum([local_rows])[0]
        t1 = time.perf_counter()
        update_stats: dict[str, float] = {}
        needs_update = total_kept > 0
        if needs_update and algo.name != "ppo" and algo.kl_coef == 0 and algo.entropy_coef == 0:
            # Outcome advantages are all zero when no group has reward spread: the update would change nothing
            # but the optimizer's moments, so skip its forward/backward (it is most of a CPU step). Counted on
            # what the update sees (after filtering, RoC and masking), not on the groups before.
            signal = groups_with_signal(batch.rewards, batch.group_ids, batch.mask.any(-1)) if batch is not None else 0
            needs_update = self.strategy.all_max([float(signal > 0)])[0] > 0
        update_stats["train/update_skipped"] = 0.0 if needs_update else 1.0
        if needs_update:
            if batch is None:  # this rank has nothing: a zero-mask stand-in keeps the collectives in step
                kept = trajs[:1]
                batch = pack(kept, self.pad_id)
                batch.mask = torch.zeros_like(batch.mask)
            batch = batch.to(self.policy.device)
            sleep = getattr(self.rollout_engine, "sleep", None)  # a colocated engine frees the GPU for the update
            if callable(sleep):
                sleep()
            update_stats.update(self.updater.run(batch, self._plan(len(kept)), seed=self.cfg.run.seed * 7919 + step))
            update_stats.update(self._after_update())
        elif getattr(getattr(self.strategy, "ds", None), "zero_stage", 0) != 3:
            # No update, but the sampler/trainer mismatch is still measured (one micro-batch, no graph), on the
            # trajectories filtering dropped if need be. ZeRO-3 would need every rank in the forward's
            # all-gathers, so it logs mismatch_kl on update steps only.
            probe = batch if batch is not None else ([t for t in trajs if not t.infra_failed and t.response_ids]
                                                     [: algo.micro_batch_size])
            if isinstance(probe, list):
                probe = pack(probe, self.pad_id) if probe else None
            if probe is not None:
                update_stats.update(self.updater.measure_mismatch(probe.to(self.policy.device), algo.micro_batch_size))
        t_update = time.perf_counter() - t1

        everyone = [t for part in self.strategy.all_gather(trajs) for t in part]
        counts = self.strategy.all_sum([select_stats[k] for k in sorted(select_stats)])
        metrics = rollout_metrics(everyone)
        metrics.update(dict(zip(sorted(select_stats), counts)))
        metrics.update(update_stats)
        metrics["time/gen_s"] = max(0.0, t_rollout - sandbox_s)
        metrics["time/sandbox_s"] = sandbox_s
        metrics["time/update_s"] = t_update
        metrics["time/step_s"] = time.perf_counter() - t0
        return StepResult(metrics=metrics, trajectories=everyone)

    def _plan(self, local_rows: int) -> UpdatePlan:
        algo = self.cfg.algo
        global_rows = self.strategy.all_sum([float(local_rows)])[0]
        minis = max(1, -(-int(global_rows) // max(1, algo.mini_batch_size)))  # ceil
        return UpdatePlan(epochs=max(1, algo.ppo_epochs), mini_batches=int(self.strategy.all_max([float(minis)])[0]),
                          micro_batch_size=max(1, algo.micro_batch_size))

    def _after_update(self) -> dict[str, float]:
        """Push the new weights to engines that keep their own copy (timed, with the engine's own logprob check);
        engines that share the policy's module see the update already."""
        if not self.rollout_engine.caps.needs_weight_sync:
            return {}
        t0 = time.perf_counter()
        with self._gathered(for_rollout=False):
            info = self.rollout_engine.sync_weights(self.policy.module)
        out = {"time/sync_s": time.perf_counter() - t0}
        if isinstance(info, dict) and isinstance(info.get("mean"), (int, float)):
            out["sync/logprob_diff"] = float(info["mean"])
        return out

    def _gathered(self, for_rollout: bool) -> Any:
        """Full ZeRO-3 weights where the engine needs them: an engine generating with the live module (rollouts),
        or a weight sync that reads the whole module; a colocated engine gathers layer by layer itself."""
        import contextlib

        engine = self.rollout_engine
        if getattr(engine, "gathers_params_itself", False):
            return contextlib.nullcontext()
        if for_rollout and not engine.caps.shares_policy_weights:
            return contextlib.nullcontext()
        return self.strategy.gathered_params(self.policy.module)
