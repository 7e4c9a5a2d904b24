"""RL algorithms as small pure torch functions: advantage estimators, losses, KL, entropy.

No engine (deepspeed, vllm, wandb) is imported here: the trainer composes these with whatever runs the model.
"""

from toolrl.algos.advantages import (
    broadcast_to_tokens,
    gae_advantages,
    get_adv_est,
    grpo_advantages,
    list_adv_est,
    masked_whiten,
    outcome_token_rewards,
    register_adv_est,
    rloo_advantages,
    zero_signal_groups,
    zero_signal_mask,
)
from toolrl.algos.logits import entropy_from_logits, token_logprobs
from toolrl.algos.losses import (
    LOSS_AGG_MODES,
    agg_units,
    agg_weights,
    aggregate,
    canonical_loss_agg,
    dual_clip_loss,
    kl_penalty,
    masked_mean,
    policy_loss,
    value_loss,
)
from toolrl.algos.stabilisers import (
    mismatch_kl,
    overlong_penalty,
    roc_downsample,
    sequence_mismatch_keep,
    truncated_is_weights,
)

__all__ = [
    "LOSS_AGG_MODES",
    "agg_units",
    "agg_weights",
    "aggregate",
    "canonical_loss_agg",
    "dual_clip_loss",
    "mismatch_kl",
    "overlong_penalty",
    "roc_downsample",
    "sequence_mismatch_keep",
    "truncated_is_weights",
    "broadcast_to_tokens",
    "entropy_from_logits",
    "gae_advantages",
    "get_adv_est",
    "grpo_advantages",
    "kl_penalty",
    "list_adv_est",
    "masked_mean",
    "masked_whiten",
    "outcome_token_rewards",
    "policy_loss",
    "register_adv_est",
    "rloo_advantages",
    "token_logprobs",
    "value_loss",
    "zero_signal_groups",
    "zero_signal_mask",
]
