"""Advantage estimators behind a small registry (``algo.name`` picks one).

Outcome estimators (grpo, rloo) turn one reward per sample into one advantage per sample; the trainer spreads it
over the sample's model tokens with :func:`broadcast_to_tokens`. GAE works on token rewards and a value model.

Shapes: B = samples in the batch, T = response length (padded). ``mask`` is 1 on model tokens and 0 on
observation and padding tokens (``Trajectory.loss_mask`` padded with 0).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

from toolrl.errors import ConfigError

F = TypeVar("F", bound=Callable[..., object])

_ADV_ESTIMATORS: dict[str, Callable[..., object]] = {}


def register_adv_est(name: str) -> Callable[[F], F]:
    """Register an advantage estimator under ``name`` (decorator)."""

    def deco(fn: F) -> F:
        if name in _ADV_ESTIMATORS and _ADV_ESTIMATORS[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        _ADV_ESTIMATORS[name] = fn
        return fn

    return deco


def get_adv_est(name: str) -> Callable[..., object]:
    """The estimator registered as ``name``; ``ppo`` is GAE."""
    key = "gae" if name == "ppo" else name
    try:
        return _ADV_ESTIMATORS[key]
    except KeyError:
        raise ConfigError(
            f"unknown advantage estimator {name!r}",
            f"choose one of: {', '.join(sorted([*_ADV_ESTIMATORS, 'ppo']))}",
        ) from None


def list_adv_est() -> list[str]:
    return sorted(_ADV_ESTIMATORS)


def _group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Dense 0..G-1 index per sample, so that group ids may be any integers (problem hashes, offsets)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample (count, sum, sum of squares, max-min range) of its group, in float64 for exactness."""
    idx, g = _group_index(group_ids)
    r = rewards.detach().to(torch.float64)
    count = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, idx, torch.ones_like(r))
    total = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, idx, r)
    sq = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, idx, r * r)
    gmax = torch.full((g,), -torch.inf, dtype=torch.float64, device=r.device).scatter_reduce_(0, idx, r, "amax")
    gmin = torch.full((g,), torch.inf, dtype=torch.float64, device=r.device).scatter_reduce_(0, idx, r, "amin")
    return count[idx], total[idx], sq[idx], (gmax - gmin)[idx]


@register_adv_est("grpo")
def grpo_advantages(
    rewards: Tensor,  # (B,) one outcome reward per sample
    group_ids: Tensor,  # (B,) long: samples of the same prompt share an id
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:  # (B,)
    """Group-normalised outcome advantage (GRPO, as in ToRL): ``(r - mean_g) / (std_g + eps)``.

    std is the unbiased sample std of the group (as verl and TRL use). A group of one sample gets 0: with
    no siblings there is no baseline. A group whose rewards are all equal gets 0 too (no signal).
    """
    count, total, sq, spread = _group_stats(rewards, group_ids)
    mean = total / count
    centred = rewards.detach().to(torch.float64) - mean
    if norm_by_std:
        var = ((sq - count * mean * mean) / (count - 1).clamp_min(1)).clamp_min(0.0)
        centred = centred / (var.sqrt() + eps)
    adv = torch.where((count > 1) & (spread > 0), centred, torch.zeros_like(centred))
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


@register_adv_est("rloo")
def rloo_advantages(
    rewards: Tensor,  # (B,)
    group_ids: Tensor,  # (B,) long
) -> Tensor:  # (B,)
    """REINFORCE leave-one-out: ``r_i - mean of the other samples' rewards`` in the group; singletons get 0."""
    count, total, _, _ = _group_stats(rewards, group_ids)
    r = rewards.detach().to(torch.float64)
    baseline = (total - r) / (count - 1).clamp_min(1)
    adv = torch.where(count > 1, r - baseline, torch.zeros_like(r))
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


@register_adv_est("gae")
def gae_advantages(
    token_rewards: Tensor,  # (B, T) reward per token; usually the outcome reward on the last model token
    values: Tensor,  # (B, T) value-model predictions V(s_t)
    mask: Tensor,  # (B, T) 1 = model token, 0 = observation / padding
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:  # advantages (B, T), returns (B, T)
    """Multi-turn GAE: the TD recursion runs over model tokens only.

    An observation run between two model tokens is invisible: the successor of a model token is the next
    *model* token (one discount step), its value is the bootstrap, and the last model token bootstraps from 0.
    Values and rewards on masked positions are never read, and advantages/returns there are 0. Put the
    outcome reward on the last model token (:func:`outcome_token_rewards`); a reward on a masked token is ignored.
    """
    if token_rewards.shape != values.shape or values.shape != mask.shape:
        raise ValueError(f"shape mismatch: rewards {tuple(token_rewards.shape)}, values {tuple(values.shape)}, mask {tuple(mask.shape)}")
    with torch.no_grad():
        m = mask.bool()
        dtype = torch.promote_types(values.dtype, torch.float32)  # float32, or float64 when given
        r = torch.where(m, token_rewards.to(dtype), 0.0)
        v = torch.where(m, values.to(dtype), 0.0)
        B, T = v.shape
        next_value = torch.zeros(B, dtype=v.dtype, device=v.device)
        last_gae = torch.zeros(B, dtype=v.dtype, device=v.device)
        adv = torch.zeros_like(v)
        for t in range(T - 1, -1, -1):  # T steps of (B,) ops: cheap next to one forward pass
            mt = m[:, t]
            delta = r[:, t] + gamma * next_value - v[:, t]
            gae_t = delta + gamma * lam * last_gae
            # On a masked token nothing moves: the carried state passes through to the previous model token.
            last_gae = torch.where(mt, gae_t, last_gae)
            next_value = torch.where(mt, v[:, t], next_value)
            adv[:, t] = torch.where(mt, gae_t, 0.0)
        returns = torch.where(m, adv + v, 0.0)
    return adv, returns


def zero_signal_mask(
    rewards: Tensor,  # (B,)
    group_ids: Tensor,  # (B,) long
) -> Tensor:  # (B,) bool
    """True for samples whose group's rewards are all equal (singletons included): no learning signal."""
    _, _, _, spread = _group_stats(rewards, group_ids)
    return spread == 0


def zero_signal_groups(rewards: Tensor, group_ids: Tensor) -> int:
    """How many groups have no learning signal (the ``groups/zero_signal`` metric)."""
    flags = zero_signal_mask(rewards, group_ids)
    return int(torch.unique(group_ids[flags]).numel())


def broadcast_to_tokens(
    adv: Tensor,  # (B,) one advantage per sample
    mask: Tensor,  # (B, T)
) -> Tensor:  # (B, T)
    """Spread a per-sample advantage over its model tokens (0 elsewhere)."""
    return torch.where(mask.bool(), adv.unsqueeze(-1).to(torch.float32), 0.0)


def outcome_token_rewards(
    rewards: Tensor,  # (B,)
    mask: Tensor,  # (B, T)
) -> Tensor:  # (B, T)
    """Outcome rewards placed on each sample's last model token (the input GAE expects); all-masked rows get none."""
    m = mask.bool()
    T = m.shape[1]
    pos = torch.arange(T, device=m.device).expand_as(m)
    last = torch.where(m, pos, -1).max(dim=1).values  # (B,) -1 when the row has no model token
    out = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    out[rows, last[rows]] = rewards[rows].to(torch.float32)
    return out


def masked_whiten(
    x: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    eps: float = 1e-8,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> Tensor:  # (B, T)
    """Normalise to zero mean, unit variance over masked-in positions (PPO advantage whitening); 0 elsewhere.

    The variance is the unbiased one (divided by n - 1), as verl's ``masked_whiten`` uses. ``reduce`` sums a list
    of numbers over every data-parallel rank (``Strategy.all_sum``): with it the mean and variance are those of
    the global batch, the same on every rank, exactly as if the ranks' tokens were concatenated (verl whitens the
    whole batch in one place). Without it the statistics are this process's own.
    """
    m = mask.bool()
    total = reduce or (lambda v: v)
    xm = torch.where(m, x, 0.0).to(torch.float64)
    n, s = total([float(m.sum().item()), float(xm.sum().item())])
    mean = s / max(n, 1.0)
    # Second pass over deviations (not sum of squares minus square of sums): no cancellation in float.
    (ss,) = total([float((torch.where(m, x.to(torch.float64) - mean, 0.0) ** 2).sum().item())])
    var = ss / (n - 1.0) if n > 1 else 0.0
    scale = 1.0 / (var + eps) ** 0.5
    return torch.where(m, ((x.to(torch.float64) - mean) * scale).to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device))
