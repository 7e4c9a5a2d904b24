"""Stabilisers for tool-integrated RL, as pure functions: rollout/trainer mismatch correction (TIS), DAPO's soft
over-long penalty and GRPO-RoC's down-sampling rule.

Shapes: B = samples, T = response length; ``mask`` (B, T) is 1 on model tokens. ``sampler_logprobs`` are the
log-probabilities the rollout engine reported for the tokens it sampled; ``train_logprobs`` the trainer's for the
same tokens before the update (pi_old).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from torch import Tensor

# exp() of a log-ratio beyond this overflows float32 (exp(89) = inf) or dominates every sum: clamp first.
_LOG_RATIO_BOUND = 20.0


def _log_ratio(train_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor) -> Tensor:
    """log(pi_train / pi_sampler) on model tokens, 0 elsewhere, clamped to +-20 (NaN/inf inputs become bounded)."""
    diff = torch.nan_to_num(train_logprobs.detach().float() - sampler_logprobs.detach().float(),
                            nan=0.0, posinf=_LOG_RATIO_BOUND, neginf=-_LOG_RATIO_BOUND)
    return torch.where(mask.bool(), diff, 0.0).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)


def truncated_is_weights(
    train_logprobs: Tensor,  # (B, T)
    sampler_logprobs: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    cap: float,
) -> tuple[Tensor, dict[str, float]]:  # weights (B, T) detached, 0 off the mask
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): each token's policy-gradient term is weighted by ``min(pi_train / pi_sampler, cap)``.

    The sampler (vLLM, or generate in another precision) is not exactly the policy being trained; the weight
    corrects for the difference, and the cap bounds its variance. Computed in log space and clamped before
    ``exp``, so a huge log-prob difference gives ``cap``, never inf or NaN.
    Stats: ``tis/clip_frac`` (share of model tokens whose ratio exceeded the cap), ``tis/weight_mean``.
    """
    m = mask.bool()
    log_ratio = _log_ratio(train_logprobs, sampler_logprobs, m)
    log_cap = torch.log(torch.tensor(float(cap)))
    weights = torch.exp(torch.minimum(log_ratio, log_cap))
    weights = torch.where(m, weights, 0.0)
    n = m.sum().clamp_min(1)
    stats = {
        "tis/clip_frac": float(((log_ratio > log_cap) & m).sum().item() / n.item()),
        "tis/weight_mean": float(weights.sum().item() / n.item()),
    }
    return weights, stats


def mismatch_kl(
    train_logprobs: Tensor,  # (B, T)
    sampler_logprobs: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
) -> float:
    """k3 estimate of KL(pi_sampler || pi_train) per model token, on tokens drawn from the sampler:
    ``mean(r - 1 - log r)`` with ``r = pi_train / pi_sampler``. 0 when both agree; never negative; finite always."""
    m = mask.bool()
    lr = _log_ratio(train_logprobs, sampler_logprobs, m).to(torch.float64)
    # expm1 in float64: for the tiny log-ratios of a matched sampler, exp(x) - 1 - x in float32 is rounding noise
    k3 = torch.where(m, torch.expm1(lr) - lr, 0.0).clamp_min(0.0)
    return float(k3.sum().item() / max(int(m.sum().item()), 1))


def sequence_mismatch_keep(
    train_logprobs: Tensor,  # (B, T)
    sampler_logprobs: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    threshold: float,
) -> Tensor:  # (B,) bool: True = keep the sequence
    """Sequence-level mask: a response whose geometric-mean ratio ``exp(mean_t log(pi_train / pi_sampler))`` lies
    outside ``[1 / threshold, threshold]`` is dropped from the loss (verl's geometric rejection sampling;
    IcePop-style masking at sequence level). Rows without model tokens are kept (they weigh nothing anyway)."""
    m = mask.bool()
    lr = _log_ratio(train_logprobs, sampler_logprobs, m)
    mean_lr = lr.sum(-1) / m.sum(-1).clamp_min(1)
    bound = float(torch.log(torch.tensor(float(threshold))).item())
    return mean_lr.abs() <= bound


def overlong_penalty(
    lengths: Tensor,  # (B,) response lengths in tokens
    max_len: int,  # the response budget L_max
    buffer: int,  # L_cache: the soft zone before the budget
    factor: float = 1.0,
) -> Tensor:  # (B,) float32, <= 0
    """DAPO's soft over-long punishment (Yu et al. 2025, eq. 13), added to the outcome reward:

        0                                  if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
        -1                                 if |y| > L_max
    times ``factor``. The penalty grows linearly over the last ``buffer`` tokens of the budget.

    >>> overlong_penalty(torch.tensor([50, 80, 90, 100, 120]), max_len=100, buffer=20).tolist()
    [0.0, 0.0, -0.5, -1.0, -1.0]
    """
    length = lengths.to(torch.float32)
    if buffer <= 0:
        return torch.where(length > max_len, -1.0, 0.0) * factor
    start = max_len - buffer
    soft = (start - length) / buffer
    out = torch.where(length <= start, torch.zeros_like(length), torch.where(length <= max_len, soft, -torch.ones_like(length)))
    return out * factor


def roc_downsample(
    correct: Sequence[bool],
    penalties: Sequence[float],
    keep: int,
    rng: random.Random,
) -> list[int]:
    """GRPO-RoC's Resample-on-Correct rule (rStar2-Agent, Shang et al. 2025) for one oversampled group: which
    ``keep`` of the samples to train on. Returns their indices in the original order.

    - The kept group has the oversampled group's share of failures and successes (rounded; at least one of each
      when both exist, so the group keeps its signal).
    - Failures are kept as they are: chosen uniformly at random, never by quality, so every kind of mistake stays
      represented.
    - Successes are chosen by quality: the lowest ``penalties`` (tool errors + format issues) first, ties broken
      at random. rStar2-Agent samples successes with a probability that falls with the penalty; keeping the
      cleanest is the deterministic limit of that rule.
    """
    n = len(correct)
    if len(penalties) != n:
        raise ValueError("correct and penalties differ in length")
    if keep >= n:
        return list(range(n))
    pos = [i for i in range(n) if correct[i]]
    neg = [i for i in range(n) if not correct[i]]
    k_pos = round(keep * len(pos) / n)
    if pos and neg:
        k_pos = min(max(k_pos, 1), keep - 1)
    k_pos = min(k_pos, len(pos))
    k_neg = min(keep - k_pos, len(neg))
    k_pos = keep - k_neg  # whichever side ran short, the other fills the group
    ties = {i: rng.random() for i in pos}
    chosen_pos = sorted(pos, key=lambda i: (penalties[i], ties[i]))[:k_pos]
    chosen_neg = rng.sample(neg, k_neg)
    return sorted(chosen_pos + chosen_neg)
