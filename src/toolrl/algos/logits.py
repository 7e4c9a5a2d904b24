"""Per-token log-probabilities and entropies from logits, without materialising a full log_softmax copy.

A (B, T, V) log_softmax doubles the largest tensor of the step (V is 49k-152k). Both functions work on row
chunks instead, so the extra memory is one chunk of (rows, V), and they compute in float32 even for bf16
logits (bf16 log-probs are too coarse for PPO ratios).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows of V logits handled at once: 4096 * 152k vocab * 4 bytes = 2.5 GB worst case, 0.8 GB for 49k vocab.
_CHUNK_ROWS = 4096


def token_logprobs(
    logits: Tensor,  # (B, T, V) the model's logits for predicting each label
    labels: Tensor,  # (B, T) long: the token that was actually sampled at each position
    temperature: float = 1.0,
    chunk_rows: int = _CHUNK_ROWS,
) -> Tensor:  # (B, T) float32 log pi(label | prefix)
    """log-softmax(logits / temperature) gathered at ``labels``, as ``logit[label] - logsumexp(logits)``.

    Pass the sampling temperature so that ratios against the sampler's log-probs compare like with like.
    Labels must be valid token ids (observation tokens are real tokens; mask them in the loss, not here).
    """
    B, T, V = logits.shape
    flat = logits.reshape(B * T, V)
    lab = labels.reshape(B * T)
    out = []
    for start in range(0, flat.shape[0], chunk_rows):
        x = flat[start : start + chunk_rows].float()
        if temperature != 1.0:
            x = x / temperature
        picked = x.gather(-1, lab[start : start + chunk_rows].unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(x, dim=-1))
    return torch.cat(out).reshape(B, T) if out else logits.new_zeros(B, T, dtype=torch.float32)


def entropy_from_logits(
    logits: Tensor,  # (B, T, V)
    temperature: float = 1.0,
    chunk_rows: int = _CHUNK_ROWS,
) -> Tensor:  # (B, T) float32 entropy of the next-token distribution, in nats
    """H = logsumexp(x) - sum(softmax(x) * x), chunked like :func:`token_logprobs`."""
    B, T, V = logits.shape
    flat = logits.reshape(B * T, V)
    out = []
    for start in range(0, flat.shape[0], chunk_rows):
        x = flat[start : start + chunk_rows].float()
        if temperature != 1.0:
            x = x / temperature
        lse = torch.logsumexp(x, dim=-1)
        p = torch.softmax(x, dim=-1)
        out.append(lse - (p * x).sum(-1))
    return torch.cat(out).reshape(B, T) if out else logits.new_zeros(B, T, dtype=torch.float32)
