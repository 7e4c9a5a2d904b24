"""One policy update over a batch of scored rollouts: advantages, then epochs of mini-batches of micro-batches.

Everything here is torch on whatever modules it is given (DeepSpeed engines in training, plain modules in tests).
Observation and padding tokens carry mask 0, so they are out of the policy loss, the KL and the entropy terms and
never reach GAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from toolrl.algos import (
    agg_weights,
    aggregate,
    broadcast_to_tokens,
    gae_advantages,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
    outcome_token_rewards,
    policy_loss,
    rloo_advantages,
    value_loss,
)
from toolrl.algos.losses import canonical_loss_agg
from toolrl.algos.stabilisers import mismatch_kl, sequence_mismatch_keep, truncated_is_weights
from toolrl.config.schema import AlgoConfig
from toolrl.train.batch import RolloutBatch, chunks, loss_units
from toolrl.train.forward import response_logprobs, response_values


def outcome_advantages(batch: RolloutBatch, algo: AlgoConfig) -> Tensor:  # (B, T)
    """GRPO / RLOO: one advantage per sample from its group's rewards, spread over its model tokens."""
    if algo.name == "grpo":
        adv = grpo_advantages(batch.rewards, batch.group_ids, algo.norm_adv_by_std)
    elif algo.name == "rloo":
        adv = rloo_advantages(batch.rewards, batch.group_ids)
    else:
        raise ValueError(f"{algo.name} is not an outcome estimator")
    return broadcast_to_tokens(adv, batch.mask)


def gae(batch: RolloutBatch, values: Tensor, algo: AlgoConfig,
        all_sum: Callable[[list[float]], list[float]] | None = None) -> tuple[Tensor, Tensor]:
    """PPO: GAE over model tokens only (observation runs are skipped), advantages whitened over the global batch
    (``all_sum`` sums over ranks, as verl whitens the whole batch; without it, over this rank's rows)."""
    token_rewards = outcome_token_rewards(batch.rewards, batch.mask)
    adv, returns = gae_advantages(token_rewards, values, batch.mask, algo.gamma, algo.lam)
    return masked_whiten(adv, batch.mask, reduce=all_sum), returns


def split_even(n: int, parts: int) -> list[list[int]]:
    """0..n-1 in ``parts`` consecutive, nearly equal pieces (some may be empty when parts > n).

    >>> split_even(5, 2), split_even(1, 2)
    ([[0, 1, 2], [3, 4]], [[0], []])
    """
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


@dataclass
class UpdatePlan:
    """How many optimizer steps and micro-batches; equal on every rank (ZeRO collectives need the same count)."""

    epochs: int
    mini_batches: int
    micro_batch_size: int

    @property
    def optimizer_steps(self) -> int:
        return self.epochs * self.mini_batches


ReduceFn = Callable[[list[float], str], list[float]]  # (values, "sum" | "max") -> reduced over ranks


def _local(values: list[float], op: str) -> list[float]:
    return values


class PolicyUpdater:
    """Runs the optimisation of one RL step. ``policy``/``critic`` are DeepSpeed engines (or anything with
    ``backward``/``step``/``set_gradient_accumulation_boundary``), ``ref`` a frozen module or None."""

    def __init__(self, policy: Any, algo: AlgoConfig, temperature: float, *, critic: Any = None, ref: Any = None,
                 reduce: ReduceFn = _local, world_size: int = 1, max_len: int | None = None) -> None:
        self.policy = policy
        self.critic = critic
        self.ref = ref
        self.algo = algo
        self.agg = canonical_loss_agg(algo.loss_agg, warn=True)
        # seq-mean-token-sum-norm divides by a constant: Dr. GRPO's MAX_TOKENS (the response budget).
        self.max_len = algo.loss_agg_norm or max_len
        self.temperature = temperature
        self.reduce = reduce
        self.world_size = world_size
        self.last_grad_norm: float | None = None

    # -- preparation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_all(self, batch: RolloutBatch, size: int, fn: Callable[[RolloutBatch], Tensor]) -> Tensor:
        return torch.cat([fn(batch.select(idx)) for idx in chunks(batch.size, size)], dim=0)

    def prepare(self, batch: RolloutBatch, plan: UpdatePlan) -> RolloutBatch:
        """Fill advantages (and returns, old values, old/ref log-probs where needed)."""
        mb = plan.micro_batch_size
        if self.algo.name == "ppo":
            if self.critic is None:
                raise ValueError("PPO needs a critic")
            batch.old_values = self._forward_all(batch, mb, lambda b: response_values(self.critic, b))
            batch.advantages, batch.returns = gae(batch, batch.old_values, self.algo,
                                                  lambda v: self.reduce(v, "sum"))
        else:
            batch.advantages = outcome_advantages(batch, self.algo)
        if plan.optimizer_steps > 1 or self._masks_sequences(batch):
            # After the first optimizer step the policy is no longer the sampler: freeze pi_old now. The sequence
            # mask needs it too, before the loss weights are set (see _drop_mismatched_sequences).
            batch.old_logprobs = self._forward_all(
                batch, mb, lambda b: response_logprobs(self.policy, b, self.temperature)[0])
        if self.ref is not None and self.algo.kl_coef > 0:
            batch.ref_logprobs = self._forward_all(batch, mb, lambda b: response_logprobs(self.ref, b, self.temperature)[0])
        return batch

    def _masks_sequences(self, batch: RolloutBatch) -> bool:
        return self.algo.tis_seq_threshold is not None and batch.sampler_logprobs is not None

    def _drop_mismatched_sequences(self, batch: RolloutBatch) -> list[tuple[str, float, float]]:
        """The sequence-level mismatch mask (algo.tis_seq_threshold), applied to the loss mask before any loss
        weight is computed: a dropped response leaves the update entirely, denominators included, as a rejected
        sample should (its reward has already counted in its group's baseline). Returns the (metric, value, weight)
        of ``mismatch_kl`` over every row, dropped ones included, and ``tis/seq_masked``."""
        assert batch.old_logprobs is not None and batch.sampler_logprobs is not None and batch.sampler_valid is not None
        valid = batch.sampler_valid.to(batch.mask.device)
        vmask = batch.mask.bool() & valid.unsqueeze(-1)
        rows = vmask.any(-1)
        nvalid, nrows = float(vmask.sum().item()), float(rows.sum().item())
        if nvalid == 0:
            return []
        old, sampler = batch.old_logprobs, batch.sampler_logprobs.to(batch.old_logprobs.device)
        keep = sequence_mismatch_keep(old, sampler, vmask, self.algo.tis_seq_threshold) | ~rows  # type: ignore[arg-type]
        batch.mask = batch.mask * keep.unsqueeze(-1).to(batch.mask.dtype)
        return [("mismatch_kl", mismatch_kl(old, sampler, vmask), nvalid),
                ("tis/seq_masked", float((~keep).sum().item()) / max(nrows, 1.0), nrows)]

    # -- optimisation ---------------------------------------------------------------------------------------
    def run(self, batch: RolloutBatch, plan: UpdatePlan, seed: int = 0) -> dict[str, float]:
        batch = self.prepare(batch, plan)
        pre_stats = self._drop_mismatched_sequences(batch) if self._masks_sequences(batch) else []
        gen = torch.Generator().manual_seed(seed)
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        grad_norms: list[float] = []

        def add(key: str, value: float, w: float) -> None:
            sums[key] = sums.get(key, 0.0) + value * w
            weights[key] = weights.get(key, 0.0) + w

        for key, value, w in pre_stats:
            add(key, value, w)

        for _epoch in range(plan.epochs):
            order = torch.randperm(batch.size, generator=gen) if plan.optimizer_steps > 1 else torch.arange(batch.size)
            for mini_idx in split_even(batch.size, plan.mini_batches):
                mini = batch.select(order[mini_idx]) if mini_idx else batch.select([0])
                if not mini_idx:  # this rank ran out of rows: a zero-weight stand-in keeps collectives in step
                    mini.mask = torch.zeros_like(mini.mask)
                # Weights over the whole mini-batch and a global unit count make every aggregation mode exact
                # under micro-batching and across ranks (DeepSpeed averages gradients, hence / world_size).
                mini.loss_weights = agg_weights(mini.mask, self.agg, mini.group_ids, self.max_len)  # type: ignore[arg-type]
                units = self.reduce([loss_units(mini.mask, self.agg, mini.group_ids)], "sum")[0] / self.world_size
                micro_rows = chunks(mini.size, plan.micro_batch_size)
                n_micro = int(self.reduce([float(len(micro_rows))], "max")[0])
                mini_loss: dict[str, float] = {}
                for i in range(n_micro):
                    boundary = i == n_micro - 1
                    if i < len(micro_rows):
                        micro = mini.select(micro_rows[i])
                    else:
                        micro = mini.select([0])
                        micro.mask = torch.zeros_like(micro.mask)
                    for key, share in self._micro_step(micro, units, boundary, add).items():
                        mini_loss[key] = mini_loss.get(key, 0.0) + share
                for key, value in mini_loss.items():  # the mini-batch's aggregate loss (same on every rank)
                    add(key, value, 1.0)
                gn = _grad_norm(self.policy)
                gn = gn if gn is not None else self.last_grad_norm
                if gn is not None:
                    grad_norms.append(gn)
        out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
        if grad_norms:
            out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["lr"] = _lr(self.policy)
        return out

    def _micro_step(self, micro: RolloutBatch, units: float, boundary: bool,
                    add: Callable[[str, float, float], None]) -> dict[str, float]:
        """Forward/backward of one micro-batch; returns its shares of the mini-batch's policy (and value) loss."""
        algo = self.algo
        mask = micro.mask
        ntok = float(mask.sum().item())
        w = micro.loss_weights
        self.policy.set_gradient_accumulation_boundary(boundary)
        logprobs, ent = response_logprobs(self.policy, micro, self.temperature,
                                          entropy="grad" if algo.entropy_coef > 0 else "metric")
        old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
        assert micro.advantages is not None
        is_weights = self._mismatch(micro, old, add)
        pg, stats = policy_loss(logprobs, old, micro.advantages, mask, algo.clip_low, algo.clip_high, self.agg,
                                dual_clip_c=algo.dual_clip_c, is_weights=is_weights, weights=w, units=units)
        loss = pg
        if micro.ref_logprobs is not None:
            kl = kl_penalty(logprobs, micro.ref_logprobs, algo.kl_estimator, mask, clamp=algo.kl_clamp)  # type: ignore[arg-type]
            loss = loss + algo.kl_coef * aggregate(kl, mask, self.agg, weights=w, units=units)  # type: ignore[arg-type]
            add("kl", float(masked_mean(kl.detach(), mask).item()), ntok)
        if ent is not None:
            if algo.entropy_coef > 0:
                loss = loss - algo.entropy_coef * aggregate(ent, mask, self.agg, weights=w, units=units)  # type: ignore[arg-type]
            add("entropy", float(masked_mean(ent.detach(), mask).item()), ntok)
        # Each term is sum(weight * token loss) / (units of the whole mini-batch): accumulated over micro-batches
        # the gradient is exactly that of the mini-batch's aggregate, whatever the mode.
        self.policy.backward(loss, scale_wrt_gas=False)
        if boundary:
            self.last_grad_norm = boundary_grad_norm(self.policy)
        self.policy.step()
        shares = {"loss/policy": float(pg.item())}
        add("clip_frac", stats["clip_frac"], ntok)
        add("approx_kl", stats["approx_kl"], ntok)
        if algo.dual_clip_c is not None:
            add("clip_frac_lower", stats["clip_frac_lower"], ntok)

        if self.critic is not None:
            assert micro.old_values is not None and micro.returns is not None
            self.critic.set_gradient_accumulation_boundary(boundary)
            values = response_values(self.critic, micro)
            vl, vstats = value_loss(values, micro.old_values, micro.returns, mask, algo.value_clip, self.agg,  # type: ignore[arg-type]
                                    weights=w, units=units)
            self.critic.backward(algo.vf_coef * vl, scale_wrt_gas=False)
            self.critic.step()
            shares["loss/value"] = float(vl.item())
            add("value/clip_frac", vstats["vf_clip_frac"], ntok)
            add("value/mean", float(masked_mean(values.detach(), mask).item()), ntok)
        return shares

    @torch.no_grad()
    def measure_mismatch(self, batch: RolloutBatch, rows: int) -> dict[str, float]:
        """``mismatch_kl`` on up to ``rows`` rows with one no-grad forward: for steps that skip the update (nothing
        to learn from), so that the trainer/sampler mismatch is still logged every step."""
        if batch.sampler_logprobs is None or batch.sampler_valid is None:
            return {}
        live = batch.sampler_valid.to(batch.mask.device) & batch.mask.bool().any(-1)
        idx = torch.nonzero(live).squeeze(-1)[: max(1, rows)].tolist()
        if not idx:
            return {}
        part = batch.select(idx)
        lp, _ = response_logprobs(self.policy, part, self.temperature)
        return {"mismatch_kl": mismatch_kl(lp, part.sampler_logprobs.to(lp.device), part.mask)}  # type: ignore[union-attr]

    def _mismatch(self, micro: RolloutBatch, train_lp: Tensor, add: Callable[[str, float, float], None]) -> Tensor | None:
        """Trainer vs sampler: log ``mismatch_kl`` every step; return TIS / sequence-mask weights when enabled."""
        algo = self.algo
        if micro.sampler_logprobs is None or micro.sampler_valid is None:
            return None
        valid = micro.sampler_valid.to(micro.mask.device)
        vmask = micro.mask.bool() & valid.unsqueeze(-1)
        nvalid = float(vmask.sum().item())
        if nvalid == 0:
            return None
        sampler = micro.sampler_logprobs.to(train_lp.device)
        if algo.tis_seq_threshold is None:  # with the sequence mask, prepare() measured it before dropping rows
            add("mismatch_kl", mismatch_kl(train_lp, sampler, vmask), nvalid)
        if algo.tis_cap is None:
            return None
        tis, tstats = truncated_is_weights(train_lp, sampler, vmask, algo.tis_cap)
        add("tis/clip_frac", tstats["tis/clip_frac"], nvalid)
        add("tis/weight_mean", tstats["tis/weight_mean"], nvalid)
        return torch.where(vmask, tis, torch.ones_like(train_lp, dtype=torch.float32))


def boundary_grad_norm(engine: Any) -> float | None:
    """Global gradient norm before clipping, read after the boundary backward (gradients already averaged over
    ranks). Only for ZeRO-0: its clipping discards the norm, while ZeRO-1/2/3 optimizers report their own."""
    stage = getattr(engine, "zero_optimization_stage", lambda: 0)()
    if stage != 0:
        return None
    grads = [p.grad.detach().float().norm() for p in engine.module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm().item()) if grads else None


def _grad_norm(engine: Any) -> float | None:
    get = getattr(engine, "get_global_grad_norm", None)
    value = get() if callable(get) else None
    if value is None:
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None


def _lr(engine: Any) -> float:
    get = getattr(engine, "get_lr", None)
    if callable(get):
        lrs = get()
        if lrs:
            return float(lrs[0])
    return float("nan")
