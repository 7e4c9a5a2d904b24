"""Advantage estimators against hand-computed values, plus the masking rules of multi-turn GAE."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from toolrl.algos import (
    broadcast_to_tokens,
    gae_advantages,
    get_adv_est,
    grpo_advantages,
    masked_whiten,
    outcome_token_rewards,
    register_adv_est,
    rloo_advantages,
    zero_signal_groups,
    zero_signal_mask,
)
from toolrl.errors import ConfigError

# Group 0: four samples, mean 0.5, unbiased std exactly 1. Group 9: a singleton. Group 7: all equal.
REWARDS = torch.tensor([1.0, -1.0, 1.0, 1.0, 0.5, 2.0, 2.0])
GROUPS = torch.tensor([0, 0, 0, 0, 9, 7, 7])


def test_grpo_hand_computed() -> None:
    adv = grpo_advantages(REWARDS, GROUPS)
    expected = torch.tensor([0.5, -1.5, 0.5, 0.5, 0.0, 0.0, 0.0]) / (1 + 1e-6)
    torch.testing.assert_close(adv, expected)


def test_grpo_without_std_is_centred_reward() -> None:
    adv = grpo_advantages(REWARDS, GROUPS, norm_by_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -1.5, 0.5, 0.5, 0.0, 0.0, 0.0]))


def test_grpo_group_ids_need_not_be_contiguous_or_sorted() -> None:
    perm = torch.tensor([6, 2, 4, 0, 5, 1, 3])
    adv = grpo_advantages(REWARDS[perm], GROUPS[perm] * 1000 + 17)
    torch.testing.assert_close(adv, grpo_advantages(REWARDS, GROUPS)[perm])


def test_rloo_hand_computed() -> None:
    # Sample 0: others are (-1, 1, 1), baseline 1/3 -> 2/3; sample 1: others all 1 -> -2.
    adv = rloo_advantages(REWARDS, GROUPS)
    torch.testing.assert_close(adv, torch.tensor([2 / 3, -2.0, 2 / 3, 2 / 3, 0.0, 0.0, 0.0]))


def test_zero_signal_mask_and_group_count() -> None:
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 5])
    assert zero_signal_mask(rewards, groups).tolist() == [True, True, True, False, False, True]
    assert zero_signal_groups(rewards, groups) == 2
    # Every zero-signal sample gets a zero GRPO advantage: filtering them drops nothing the loss would use.
    assert (grpo_advantages(rewards, groups)[zero_signal_mask(rewards, groups)] == 0).all()


def test_gae_hand_computed_skips_observation_tokens() -> None:
    # Model tokens at 0, 1, 4; tokens 2-3 are an observation whose (absurd) values must be skipped.
    mask = torch.tensor([[1, 1, 0, 0, 1]])
    values = torch.tensor([[0.5, 0.6, 9.0, 9.0, 0.8]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=4: 1 - 0.8 = 0.2; t=1: 0.9*0.8 - 0.6 + 0.72*0.2 = 0.264; t=0: 0.9*0.6 - 0.5 + 0.72*0.264 = 0.23008
    torch.testing.assert_close(adv, torch.tensor([[0.23008, 0.264, 0.0, 0.0, 0.2]]))
    torch.testing.assert_close(ret, torch.tensor([[0.73008, 0.864, 0.0, 0.0, 1.0]]))


def test_gae_masked_values_and_rewards_change_nothing() -> None:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 40, generator=g) > 0.4).int()
    mask[:, -5:] = 0  # padding
    values = torch.randn(6, 40, generator=g)
    rewards = outcome_token_rewards(torch.randn(6, generator=g), mask)
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.99, lam=0.95)
    garbage = torch.randn(6, 40, generator=g) * 1e4
    adv2, ret2 = gae_advantages(
        torch.where(mask.bool(), rewards, garbage), torch.where(mask.bool(), values, -garbage), mask, 0.99, 0.95
    )
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    # ...and changing a value on a model token does change earlier advantages (the test can fail).
    values[0, mask[0].nonzero()[-1]] += 1.0
    adv3, _ = gae_advantages(rewards, values, mask, 0.99, 0.95)
    assert not torch.equal(adv, adv3)


def test_gae_with_gamma_lam_one_is_return_minus_value() -> None:
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 0, 0]])
    values = torch.tensor([[0.1, 5.0, 0.2, 0.3, 5.0, 0.4, 0.0, 0.0]])
    rewards = outcome_token_rewards(torch.tensor([2.0]), mask)
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    m = mask.bool()
    torch.testing.assert_close(adv[m], 2.0 - values[m])
    torch.testing.assert_close(ret[m], torch.full((4,), 2.0))


def test_outcome_token_rewards_places_reward_on_last_model_token() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    out = outcome_token_rewards(torch.tensor([1.0, -1.0, 3.0]), mask)
    assert out.tolist() == [[0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 0]]


def test_broadcast_to_tokens_and_whiten_respect_mask() -> None:
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    tok = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert tok.tolist() == [[2.0, 0.0, 2.0], [-1.0, -1.0, 0.0]]
    w = masked_whiten(torch.where(mask.bool(), tok, 1e6), mask)
    assert w[mask == 0].abs().sum() == 0
    assert abs(w[mask == 1].mean().item()) < 1e-6
    assert abs(w[mask == 1].var(unbiased=True).item() - 1.0) < 1e-4  # verl's convention: unbiased variance


def test_registry() -> None:
    assert get_adv_est("grpo") is grpo_advantages
    assert get_adv_est("rloo") is rloo_advantages
    assert get_adv_est("ppo") is gae_advantages  # algo.name=ppo means GAE with a value model
    with pytest.raises(ConfigError) as e:
        get_adv_est("gpro")
    assert "grpo" in (e.value.hint or "")
    with pytest.raises(ValueError):
        register_adv_est("grpo")(rloo_advantages)

    @register_adv_est("test_constant")
    def _const(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(rewards)

    assert get_adv_est("test_constant") is _const


def test_pure_modules_import_no_engine() -> None:
    code = (
        "import sys, toolrl.algos, toolrl.tracking; "
        "bad = [m for m in ('deepspeed', 'vllm', 'wandb') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
