"""Masked reductions, the clipped policy loss (clip-higher, dual-clip, truncated importance sampling), KL
estimators and the clipped value loss.

Every masked operation uses ``torch.where`` rather than multiplying by the mask: whatever sits on an observation
or padding position (huge values, garbage) can never leak into a loss or a gradient, not even as ``0 * inf``.
Shapes: B = samples, T = response length; ``mask`` (B, T) is 1 on model tokens.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "prompt-mean", "token_mean", "seq_mean"]
KLEstimator = Literal["k1", "k3"]

# The aggregation modes, named as in the papers and verl; the old spellings stay valid as aliases.
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "prompt-mean")
LOSS_AGG_ALIASES = {"token_mean": "token-mean", "seq_mean": "seq-mean-token-mean"}

# exp() of a log-ratio beyond this overflows or dominates; verl and OpenRLHF clamp at the same bound.
_LOG_RATIO_BOUND = 20.0


def canonical_loss_agg(mode: str, warn: bool = False) -> str:
    """The paper name of a loss aggregation mode (``token_mean`` -> ``token-mean``, ``seq_mean`` ->
    ``seq-mean-token-mean``); ``warn`` emits a deprecation warning for the old spellings.

    >>> canonical_loss_agg("seq_mean"), canonical_loss_agg("prompt-mean")
    ('seq-mean-token-mean', 'prompt-mean')
    """
    if mode in LOSS_AGG_ALIASES:
        new = LOSS_AGG_ALIASES[mode]
        if warn:
            warnings.warn(f"algo.loss_agg={mode} is an old name: use algo.loss_agg={new} (same behaviour)",
                          FutureWarning, stacklevel=2)
        return new
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r} ({', '.join(LOSS_AGG_MODES)})")
    return mode


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


def agg_weights(
    mask: Tensor,  # (B, T)
    mode: AggMode = "token-mean",
    group_ids: Tensor | None = None,  # (B,) prompt-mean only
    max_len: float | None = None,  # seq-mean-token-sum-norm only; default: the padded width T
) -> Tensor:  # (B, T) float32, 0 off the mask
    """Per-token weights whose sum, divided by :func:`agg_units`, is each aggregation mode's mean.

    token-mean               1                  (every model token of the batch weighs the same; DAPO)
    seq-mean-token-mean      1 / n_i            (each response weighs the same; the GRPO paper)
    seq-mean-token-sum-norm  1 / max_len        (token sums over a constant; Dr. GRPO, max_len = the response budget)
    prompt-mean              1 / N_g            (each prompt's group weighs the same, its tokens alike)
    with n_i the model tokens of response i and N_g those of all responses to the same prompt. Computed over a
    whole mini-batch, the weights make micro-batch accumulation exact for every mode.
    """
    mode = canonical_loss_agg(mode)
    m = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    if mode == "token-mean":
        w = torch.ones(m.shape, dtype=torch.float32, device=mask.device)
    elif mode == "seq-mean-token-mean":
        w = (1.0 / m.sum(-1).clamp_min(1).to(torch.float32)).unsqueeze(-1).expand(m.shape)
    elif mode == "seq-mean-token-sum-norm":
        width = float(max_len if max_len is not None else m.shape[-1])
        w = torch.full(m.shape, 1.0 / max(width, 1.0), dtype=torch.float32, device=mask.device)
    else:  # prompt-mean
        if group_ids is None:
            raise ValueError("prompt-mean aggregation needs group_ids")
        _, idx = torch.unique(group_ids, return_inverse=True)
        per_group = torch.zeros(int(idx.max().item()) + 1 if idx.numel() else 0, device=mask.device)
        per_group.index_add_(0, idx.to(mask.device), m.sum(-1).to(torch.float32))
        w = (1.0 / per_group[idx].clamp_min(1)).unsqueeze(-1).expand(m.shape)
    return torch.where(m, w, zero)


def agg_units(mask: Tensor, mode: AggMode = "token-mean", group_ids: Tensor | None = None) -> float:
    """What a mode averages over: model tokens (token-mean), responses with a model token (the two seq-mean
    modes), or prompts with a model token (prompt-mean)."""
    mode = canonical_loss_agg(mode)
    m = mask.bool()
    if mode == "token-mean":
        return float(m.sum().item())
    rows = m.any(dim=-1)
    if mode == "prompt-mean":
        if group_ids is None:
            raise ValueError("prompt-mean aggregation needs group_ids")
        return float(torch.unique(group_ids[rows.to(group_ids.device)]).numel())
    return float(rows.sum().item())


def aggregate(
    loss: Tensor,  # (B, T) per-token loss
    mask: Tensor,  # (B, T)
    mode: AggMode = "token-mean",
    num_tokens: float | None = None,
    *,
    weights: Tensor | None = None,  # (B, T) from agg_weights over the whole mini-batch
    units: float | None = None,
    group_ids: Tensor | None = None,
    max_len: float | None = None,
) -> Tensor:  # scalar
    """Turn per-token losses into one number: ``sum(weights * loss) / units`` (see :func:`agg_weights`).

    token-mean (old name token_mean): every model token in the batch weighs the same, so long responses weigh
    more (DAPO, ToRL's verl). seq-mean-token-mean (old name seq_mean): mean over each response's tokens, then over
    responses (the original GRPO); rows with no model token are left out. seq-mean-token-sum-norm: Dr. GRPO's
    token sums over a constant. prompt-mean: each prompt's group weighs the same.
    ``num_tokens`` / ``units`` divide by a fixed count instead of this batch's, and ``weights`` come from the
    whole mini-batch, so that gradient accumulation over micro-batches equals the mean over the mini-batch.
    """
    m = mask.bool()
    w = weights if weights is not None else agg_weights(m, mode, group_ids, max_len)
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    total = torch.where(m, loss * w.to(loss.dtype), zero).sum()
    denom = units if units is not None else num_tokens
    if denom is None:
        denom = agg_units(m, mode, group_ids)
    denom = float(denom)
    return total / (denom if denom > 0 else 1.0)


def dual_clip_loss(
    per_token: Tensor,  # (B, T) the clipped surrogate max(-A r, -A clip(r))
    advantages: Tensor,  # (B, T)
    c: float,
) -> tuple[Tensor, Tensor]:  # (loss (B, T), lower-clip active (B, T) bool)
    """Dual-clip PPO (Ye et al. 2020; verl's clip_ratio_c): for A < 0 the token loss is capped at ``-c * A``.

    With a negative advantage the clipped surrogate ``-A * r`` grows without bound as the ratio r grows (a token
    the update made far more likely than the sampler did). Dual-clip takes ``min(surrogate, -c * A)`` there, so
    past ``r = c`` the loss is flat and its gradient zero; positive advantages are unchanged. verl requires c > 1.
    """
    cap = -advantages * c
    neg = advantages < 0
    active = neg & (per_token > cap)
    return torch.where(neg, torch.minimum(per_token, cap), per_token), active


def policy_loss(
    logprobs: Tensor,  # (B, T) log pi_theta(a_t) under the current policy (requires grad)
    old_logprobs: Tensor,  # (B, T) log pi_old(a_t) of the policy that sampled the batch
    advantages: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: AggMode = "token-mean",
    num_tokens: float | None = None,
    *,
    dual_clip_c: float | None = None,
    is_weights: Tensor | None = None,  # (B, T) detached per-token weights (truncated importance sampling)
    weights: Tensor | None = None,  # (B, T) aggregation weights (agg_weights over the mini-batch)
    units: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with an asymmetric band: the ratio is clipped to [1 - clip_low, 1 + clip_high].

    clip_high > clip_low is DAPO's clip-higher: low-probability tokens with positive advantage may grow further
    before the gradient stops, which keeps entropy from collapsing. Outside the band (on the side the
    advantage pushes towards) the token's gradient is exactly zero. ``dual_clip_c`` adds the dual-clip lower
    bound for negative advantages (:func:`dual_clip_loss`); ``is_weights`` multiply each token's loss (TIS).
    Stats: ``clip_frac`` (share of model tokens where clipping is active), ``clip_frac_lower`` (share where the
    dual-clip bound is active; 0 without it), ``approx_kl`` (k3 estimate of KL(pi_old || pi_theta)), ``ratio_mean``.
    """
    m = mask.bool()
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), 0.0).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages.detach(), 0.0)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    lower = torch.zeros_like(m)
    if dual_clip_c is not None:
        per_token, lower = dual_clip_loss(per_token, adv, dual_clip_c)
    if is_weights is not None:
        per_token = per_token * torch.where(m, is_weights.detach(), 0.0)
    loss = aggregate(per_token, m, agg, num_tokens, weights=weights, units=units)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), m).item(),
            "clip_frac_lower": masked_mean(lower.float(), m).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
        }
    return loss, stats


def kl_penalty(
    logprobs: Tensor,  # (B, T) current policy
    ref_logprobs: Tensor,  # (B, T) frozen reference policy
    estimator: KLEstimator = "k3",
    mask: Tensor | None = None,  # (B, T) optional: zero the estimate on masked positions
    clamp: float | None = None,  # optional bound on each token's estimate (verl clamps k3 to [-10, 10])
) -> Tensor:  # (B, T) per-token estimate of KL(pi_theta || pi_ref)
    """Per-token KL estimators on samples from the current policy (Schulman, "Approximating KL divergence").

    k1 = log pi - log pi_ref: unbiased, can be negative, high variance.
    k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1: unbiased, always >= 0, low variance (GRPO's choice).
    The log-ratio is clamped to +-20 before exp either way; ``clamp`` additionally bounds each token's estimate
    (None = no bound, TRL's behaviour; 10 = verl's k3). A bound caps one token's pull but biases the estimate.
    """
    diff = (logprobs - ref_logprobs.detach()).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    if mask is not None:
        diff = torch.where(mask.bool(), diff, 0.0)
    if estimator == "k1":
        out = diff
    elif estimator == "k3":
        out = torch.exp(-diff) + diff - 1.0
    else:
        raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")
    return out if clamp is None else out.clamp(-clamp, clamp)


def value_loss(
    values: Tensor,  # (B, T) current value predictions (requires grad)
    old_values: Tensor,  # (B, T) predictions when the batch was collected
    returns: Tensor,  # (B, T) GAE returns (targets)
    mask: Tensor,  # (B, T)
    clip: float = 0.2,
    agg: AggMode = "token-mean",
    num_tokens: float | None = None,
    *,
    weights: Tensor | None = None,
    units: float | None = None,
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
    loss = aggregate(0.5 * torch.maximum(err, err_clipped), m, agg, num_tokens, weights=weights, units=units)
    with torch.no_grad():
        stats = {
            "vf_clip_frac": masked_mean((err_clipped > err).float(), m).item(),
            "value_mean": masked_mean(v, m).item(),
        }
    return loss, stats
