"""Padded training batches built from trajectories (pure torch, no engine).

Layout: prompts are left-padded and responses right-padded, so every response starts in the same column ``P``::

    input_ids  [pad pad p p p | r r r r pad]      (B, P + T)
    response   [r r r r pad]                       (B, T)  = input_ids[:, P:]
    mask       [1 1 0 1 0]                         (B, T)  1 = model token; observation and padding are 0

The logits predicting response token ``t`` sit at column ``P - 1 + t``; with ``logits_to_keep = T + 1`` a causal
LM returns exactly columns ``P - 1 .. P + T - 1``, so response-aligned tensors need no gather over prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

from toolrl.types import Trajectory


@dataclass
class RolloutBatch:
    input_ids: Tensor  # (B, P+T) long: left-padded prompt, right-padded response
    attention_mask: Tensor  # (B, P+T) long: 1 on real tokens
    position_ids: Tensor  # (B, P+T) long: 0 at each row's first real token
    response_ids: Tensor  # (B, T) long
    mask: Tensor  # (B, T) float: 1 on model-written response tokens only
    rewards: Tensor  # (B,) float outcome reward
    group_ids: Tensor  # (B,) long: samples of one prompt share an id
    advantages: Tensor | None = None  # (B, T) float, 0 off the mask
    returns: Tensor | None = None  # (B, T) PPO value targets
    old_logprobs: Tensor | None = None  # (B, T) log pi_old of each response token
    ref_logprobs: Tensor | None = None  # (B, T) log pi_ref (only when kl_coef > 0)
    old_values: Tensor | None = None  # (B, T) value predictions at collection time (PPO)
    sampler_logprobs: Tensor | None = None  # (B, T) the rollout engine's logprobs of the sampled tokens
    sampler_valid: Tensor | None = None  # (B,) bool: the engine reported logprobs for this row
    loss_weights: Tensor | None = None  # (B, T) aggregation weights over the mini-batch (algos.agg_weights)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def prompt_width(self) -> int:
        return int(self.input_ids.shape[1] - self.response_ids.shape[1])

    @property
    def response_width(self) -> int:
        return int(self.response_ids.shape[1])

    def select(self, idx: Sequence[int] | Tensor) -> "RolloutBatch":
        """Rows ``idx`` of every tensor field (a micro- or mini-batch)."""
        index = idx if isinstance(idx, Tensor) else torch.as_tensor(list(idx), dtype=torch.long)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: (v.index_select(0, index.to(v.device)) if isinstance(v, Tensor) else v)
                                for k, v in values.items()})

    def to(self, device: str | torch.device) -> "RolloutBatch":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in values.items()})


def group_ids_of(trajs: Sequence[Trajectory]) -> list[int]:
    """One integer per distinct problem id, in order of first appearance."""
    seen: dict[str, int] = {}
    return [seen.setdefault(t.problem.id, len(seen)) for t in trajs]


def pack(trajs: Sequence[Trajectory], pad_id: int, group_ids: Sequence[int] | None = None) -> RolloutBatch:
    """Pad trajectories into one batch. Rewards must be set (``toolrl.reward.score``)."""
    if not trajs:
        raise ValueError("cannot pack an empty list of trajectories")
    P = max(len(t.prompt_ids) for t in trajs)
    T = max(1, max(len(t.response_ids) for t in trajs))  # width 1 keeps shapes valid for empty responses
    B = len(trajs)
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    for b, t in enumerate(trajs):
        if len(t.loss_mask) != len(t.response_ids):
            raise ValueError(f"trajectory {t.problem.id}#{t.sample_index}: loss_mask and response_ids differ in length")
        p, r = len(t.prompt_ids), len(t.response_ids)
        input_ids[b, P - p : P] = torch.tensor(t.prompt_ids, dtype=torch.long)
        attn[b, P - p : P + r] = 1
        if r:
            input_ids[b, P : P + r] = torch.tensor(t.response_ids, dtype=torch.long)
            mask[b, :r] = torch.tensor(t.loss_mask, dtype=torch.float32)
    position_ids = (attn.cumsum(-1) - 1).clamp_min(0)
    rewards = torch.tensor([float(t.reward if t.reward is not None else 0.0) for t in trajs], dtype=torch.float32)
    gids = torch.tensor(list(group_ids) if group_ids is not None else group_ids_of(trajs), dtype=torch.long)
    # Sampler logprobs (vllm and hf engines report them): rows without a full list are marked invalid.
    sampler = torch.zeros((B, T), dtype=torch.float32)
    valid = torch.zeros(B, dtype=torch.bool)
    for b, t in enumerate(trajs):
        if t.logprobs is not None and len(t.logprobs) == len(t.response_ids) and t.response_ids:
            sampler[b, : len(t.logprobs)] = torch.tensor(t.logprobs, dtype=torch.float32)
            valid[b] = True
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attn,
        position_ids=position_ids,
        response_ids=input_ids[:, P:].clone(),
        mask=mask,
        rewards=rewards,
        group_ids=gids,
        sampler_logprobs=sampler,
        sampler_valid=valid,
    )


def pack_examples(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> RolloutBatch:
    """SFT batches from ``(ids, mask)`` pairs over whole sequences (mask 1 = train on this token).

    The first token plays the prompt (it has no context to be predicted from); the rest is the "response", so the
    same log-prob code serves SFT and RL, and only the mask decides what is trained on.
    """
    B = len(examples)
    L = max(2, max(len(ids) for ids, _ in examples))
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    full_mask = torch.zeros((B, L), dtype=torch.float32)
    for b, (ids, m) in enumerate(examples):
        if len(ids) != len(m):
            raise ValueError("SFT example ids and mask differ in length")
        input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attn[b, : len(ids)] = 1
        full_mask[b, : len(m)] = torch.tensor(m, dtype=torch.float32)
    position_ids = (attn.cumsum(-1) - 1).clamp_min(0)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attn,
        position_ids=position_ids,
        response_ids=input_ids[:, 1:].clone(),
        mask=full_mask[:, 1:].contiguous(),
        rewards=torch.zeros(B),
        group_ids=torch.arange(B),
    )


def chunks(n: int, size: int) -> list[list[int]]:
    """Row indices 0..n-1 cut into consecutive chunks of at most ``size``."""
    size = max(1, size)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def loss_units(mask: Tensor, agg: str, group_ids: Tensor | None = None) -> float:
    """What a loss is averaged over: model tokens (token-mean), responses with a model token (seq-mean modes), or
    prompts with a model token (prompt-mean). See :func:`toolrl.algos.agg_units`."""
    from toolrl.algos.losses import agg_units

    return agg_units(mask, agg, group_ids)  # type: ignore[arg-type]
