"""Property tests (hypothesis) for the advantage estimators."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algos import gae_advantages, grpo_advantages, rloo_advantages, zero_signal_mask

SETTINGS = settings(max_examples=60, deadline=None)

rewards_and_groups = st.lists(
    st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 1.0]), st.integers(0, 4)), min_size=1, max_size=24
).map(lambda xs: (torch.tensor([r for r, _ in xs]), torch.tensor([g for _, g in xs])))


def _plain_gae(r: list[float], v: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Textbook single-turn GAE on a list of model tokens (the reference the multi-turn one must reduce to)."""
    adv, last, nxt = [0.0] * len(r), 0.0, 0.0
    for t in reversed(range(len(r))):
        last = r[t] + gamma * nxt - v[t] + gamma * lam * last
        adv[t], nxt = last, v[t]
    return adv, [a + b for a, b in zip(adv, v)]


@SETTINGS
@given(
    rows=st.lists(
        st.lists(st.tuples(st.booleans(), st.floats(-2, 2), st.floats(-2, 2)), min_size=1, max_size=12),
        min_size=1,
        max_size=4,
    ),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_multi_turn_gae_equals_plain_gae_on_model_tokens(rows, gamma, lam) -> None:  # type: ignore[no-untyped-def]
    T = max(len(r) for r in rows)
    pad = [(False, 123.0, -77.0)]
    full = [r + pad * (T - len(r)) for r in rows]
    mask = torch.tensor([[m for m, _, _ in r] for r in full])
    rew = torch.tensor([[x for _, x, _ in r] for r in full], dtype=torch.float64)
    val = torch.tensor([[v for _, _, v in r] for r in full], dtype=torch.float64)
    adv, ret = gae_advantages(rew, val, mask, gamma, lam)
    for b, row in enumerate(full):
        idx = [t for t, (m, _, _) in enumerate(row) if m]
        exp_adv, exp_ret = _plain_gae([row[t][1] for t in idx], [row[t][2] for t in idx], gamma, lam)
        torch.testing.assert_close(adv[b, idx], torch.tensor(exp_adv, dtype=adv.dtype), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ret[b, idx], torch.tensor(exp_ret, dtype=ret.dtype), rtol=1e-4, atol=1e-5)
        assert (adv[b][~mask[b]] == 0).all()


@SETTINGS
@given(rewards_and_groups)
def test_group_advantages_are_centred_and_zero_without_signal(rg) -> None:  # type: ignore[no-untyped-def]
    rewards, groups = rg
    no_signal = zero_signal_mask(rewards, groups)
    for fn in (grpo_advantages, rloo_advantages):
        adv = fn(rewards, groups)
        assert (adv[no_signal] == 0).all()
        for g in groups.unique():
            assert abs(adv[groups == g].sum().item()) < 1e-4  # every group's advantages sum to zero
    # Groups with signal always give some non-zero advantage.
    assert (grpo_advantages(rewards, groups)[~no_signal] != 0).any() or bool(no_signal.all())


@SETTINGS
@given(rewards_and_groups, st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_grpo_is_invariant_to_affine_reward_changes(rg, scale, shift) -> None:  # type: ignore[no-untyped-def]
    rewards, groups = rg
    a = grpo_advantages(rewards, groups, eps=0.0)
    b = grpo_advantages(rewards * scale + shift, groups, eps=0.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
