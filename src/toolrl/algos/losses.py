"""Masked reductions, the clipped policy loss (with clip-higher), KL estimators and the clipped value loss.

Every masked operation uses ``torch.where`` rather than multiplying by the mask: whatever sits on an observation
or padding position (huge values, garbage) can never leak into a loss or a gradient, not even as ``0 * inf``.
Shapes: B = samples, T = response length; ``mask`` (B, T) is 1 on model tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AggMode = Literal["token_mean", "seq_mean"]
KLEstimator = Literal["k1", "k3"]

# exp() of a log-ratio beyond this overflows or dominates; verl and OpenRLHF clamp at the same bound.
_LOG_RATIO_BOUND = 20.0


def masked_mean(
    x: Tensor,  # (...) any shape
    mask: Tensor,  # same shape as x (or broadcastable)
    dim: int | None = None,
) -> Tensor:  # scalar, or x reduced over dim
    """Mean of ``x`` over positions where ``mask`` is set; 0 when nothing is set."""
    m = mask.bool()
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if dim is None:
        return total.sum() / m.sum().clamp_min(1)
    return total.sum(dim) / m.sum(dim).clamp_min(1)


def aggregate(
    loss: Tensor,  # (B, T) per-token loss
    mask: Tensor,  # (B, T)
    mode: AggMode = "token_mean",
    num_tokens: float | None = None,
) -> Tensor:  # scalar
    """Turn per-token losses into one number.

    token_mean: every model token in the batch weighs the same (long responses weigh more; DAPO, ToRL's verl).
    seq_mean: average each response over its own tokens, then average responses (each response weighs the same;
    the original GRPO); rows with no model token are left out.
    ``num_tokens`` (token_mean only) divides by a fixed count instead of this batch's, so that gradient
    accumulation over micro-batches equals the token mean of the whole mini-batch.
    """
    m = mask.bool()
    if mode == "token_mean":
        total = torch.where(m, loss, torch.zeros((), dtype=loss.dtype, device=loss.device)).sum()
        denom = num_tokens if num_tokens is not None else m.sum().clamp_min(1)
        return total / denom
    if mode == "seq_mean":
        per_seq = masked_mean(loss, m, dim=-1)  # (B,)
        has_tokens = m.any(dim=-1)
        return masked_mean(per_seq, has_tokens)
    raise ValueError(f"unknown loss aggregation {mode!r} (token_mean or seq_mean)")


def policy_loss(
    logprobs: Tensor,  # (B, T) log pi_theta(a_t) under the current policy (requires grad)
    old_logprobs: Tensor,  # (B, T) log pi_old(a_t) of the policy that sampled the batch
    advantages: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: AggMode = "token_mean",
    num_tokens: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with an asymmetric band: the ratio is clipped to [1 - clip_low, 1 + clip_high].

    clip_high > clip_low is DAPO's clip-higher: low-probability tokens with positive advantage may grow further
    before the gradient stops, which keeps entropy from collapsing. Outside the band (on the side the
    advantage pushes towards) the token's gradient is exactly zero.
    Stats: ``clip_frac`` (share of model tokens where clipping is active), ``approx_kl`` (k3 estimate of
    KL(pi_old || pi_theta)), ``ratio_mean``.
    """
    m = mask.bool()
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), 0.0).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages.detach(), 0.0)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, m, agg, num_tokens)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), m).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
        }
    return loss, stats


def kl_penalty(
    logprobs: Tensor,  # (B, T) current policy
    ref_logprobs: Tensor,  # (B, T) frozen reference policy
    estimator: KLEstimator = "k3",
    mask: Tensor | None = None,  # (B, T) optional: zero the estimate on masked positions
) -> Tensor:  # (B, T) per-token estimate of KL(pi_theta || pi_ref)
    """Per-token KL estimators on samples from the current policy (Schulman, "Approximating KL divergence").

    k1 = log pi - log pi_ref: unbiased, can be negative, high variance.
    k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1: unbiased, always >= 0, low variance (GRPO's choice).
    """
    diff = (logprobs - ref_logprobs.detach()).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    if mask is not None:
        diff = torch.where(mask.bool(), diff, 0.0)
    if estimator == "k1":
        return diff
    if estimator == "k3":
        return torch.exp(-diff) + diff - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def value_loss(
    values: Tensor,  # (B, T) current value predictions (requires grad)
    old_values: Tensor,  # (B, T) predictions when the batch was collected
    returns: Tensor,  # (B, T) GAE returns (targets)
    mask: Tensor,  # (B, T)
    clip: float = 0.2,
    agg: AggMode = "token_mean",
    num_tokens: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * max((V - R)^2, (V_old + clip(V - V_old, +-clip) - R)^2).

    The clipped term keeps one update from moving a value far from what it was at collection time.
    Stats: ``vf_clip_frac`` (share of tokens where the clipped term is the larger), ``value_mean``.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(m, values, zero)
    v_old = torch.where(m, old_values.detach(), zero)
    ret = torch.where(m, returns.detach(), zero)
    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
    err = (v - ret) ** 2
    err_clipped = (v_clipped - ret) ** 2
    loss = aggregate(0.5 * torch.maximum(err, err_clipped), m, agg, num_tokens)
    with torch.no_grad():
        stats = {
            "vf_clip_frac": masked_mean((err_clipped > err).float(), m).item(),
            "value_mean": masked_mean(v, m).item(),
        }
    return loss, stats
