"""Forward passes the trainer needs: response log-probs (and entropy) from a causal LM, and a value model.

``model`` may be a transformers module or a DeepSpeed engine wrapping one (both take the same keyword arguments).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from toolrl.algos import entropy_from_logits, token_logprobs
from toolrl.train.batch import RolloutBatch


def response_logits(model: Any, batch: RolloutBatch) -> Tensor:  # (B, T, V)
    """Logits predicting each response token; only the last T+1 columns go through the LM head."""
    T = batch.response_width
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=T + 1,
    )
    return out.logits[:, :-1, :]


def response_logprobs(
    model: Any, batch: RolloutBatch, temperature: float = 1.0, entropy: str = "none"
) -> tuple[Tensor, Tensor | None]:  # (B, T) log pi(token), (B, T) entropy or None
    """Log-probs of the response tokens at the sampling temperature (ratios then compare like with like).

    ``entropy``: none; metric = computed without a graph (for logging); grad = differentiable (entropy bonus).
    """
    t = temperature if temperature > 0 else 1.0
    logits = response_logits(model, batch)
    logprobs = token_logprobs(logits, batch.response_ids, temperature=t)
    ent = None
    if entropy == "grad":
        ent = entropy_from_logits(logits, temperature=t)
    elif entropy == "metric":
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach(), temperature=t)
    return logprobs, ent


class ValueModel(nn.Module):
    """PPO critic: a copy of the policy's backbone (no LM head) with a scalar head per position."""

    def __init__(self, causal_lm: nn.Module) -> None:
        super().__init__()
        base = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.base_model
        self.backbone = copy.deepcopy(base)
        hidden = int(causal_lm.config.hidden_size)
        self.head = nn.Linear(hidden, 1)
        # A near-zero start: early advantages are about the reward, not a random critic's opinion.
        nn.init.normal_(self.head.weight, std=1.0 / (hidden**0.5) * 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, response_width: int) -> Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, L, H)
        T = response_width
        # V(s_t) is read where token t is chosen: the column before it, as for the logits.
        return self.head(hidden[:, -(T + 1) : -1, :].to(self.head.weight.dtype)).squeeze(-1)  # (B, T)


def response_values(value_model: Any, batch: RolloutBatch) -> Tensor:  # (B, T)
    return value_model(batch.input_ids, batch.attention_mask, batch.position_ids, batch.response_width).float()
