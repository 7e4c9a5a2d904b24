"""Losses, KL, entropy and log-prob helpers: hand-computed values, masking, and clip-higher gradients."""

from __future__ import annotations

import math

import pytest
import torch

from toolrl.algos import aggregate, entropy_from_logits, kl_penalty, masked_mean, policy_loss, token_logprobs, value_loss


def _grad_of_one_token(ratio: float, adv: float, clip_low: float = 0.2, clip_high: float = 0.28) -> float:
    """d loss / d logprob for a batch holding one model token with the given ratio and advantage."""
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = policy_loss(logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), clip_low, clip_high)
    loss.backward()
    return logp.grad.item()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.1, 1.0, -1.1),  # inside the band: d(-A r)/d log r = -A r
        (1.25, 1.0, -1.25),  # above 1 + clip_low but below 1 + clip_high: still learns (clip-higher)
        (1.5, 1.0, 0.0),  # above 1 + clip_high with A > 0: clipped, no gradient
        (0.5, 1.0, -0.5),  # below the band with A > 0: the pessimistic bound is the unclipped term
        (0.9, -1.0, 0.9),
        (0.7, -1.0, 0.0),  # below 1 - clip_low with A < 0: clipped
        (1.5, -1.0, 1.5),  # above the band with A < 0: unclipped, pushes back down
    ],
)
def test_clip_higher_gradient_band(ratio: float, adv: float, expected: float) -> None:
    assert _grad_of_one_token(ratio, adv) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_symmetric_clip_stops_where_clip_higher_still_learns() -> None:
    assert _grad_of_one_token(1.25, 1.0, clip_low=0.2, clip_high=0.2) == 0.0
    assert _grad_of_one_token(1.25, 1.0, clip_low=0.2, clip_high=0.28) != 0.0


def test_policy_loss_values_and_stats() -> None:
    ratios = torch.tensor([[1.1, 1.5, 0.7, 1.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 2.0]])
    loss, stats = policy_loss(ratios.log(), torch.zeros(1, 4), adv, torch.ones(1, 4), 0.2, 0.28)
    # per token: -1.1, -1.28 (clipped), +0.8 (clipped), -2.0
    assert loss.item() == pytest.approx((-1.1 - 1.28 + 0.8 - 2.0) / 4, rel=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(ratios.mean().item(), rel=1e-6)
    expected_kl = (ratios - 1 - ratios.log()).mean().item()
    assert stats["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)


def test_masked_positions_change_neither_loss_nor_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 1]])
    logp = torch.randn(2, 6, generator=g) * 0.1 - 1
    old = logp + torch.randn(2, 6, generator=g) * 0.1
    adv = torch.randn(2, 6, generator=g)
    garbage = torch.randn(2, 6, generator=g) * 1e4

    def run(lp: torch.Tensor, o: torch.Tensor, a: torch.Tensor, agg: str) -> tuple[torch.Tensor, torch.Tensor]:
        p = lp.clone().requires_grad_(True)
        loss, _ = policy_loss(p, o, a, mask, 0.2, 0.28, agg)  # type: ignore[arg-type]
        loss.backward()
        return loss.detach(), p.grad  # type: ignore[return-value]

    m = mask.bool()
    for agg in ("token_mean", "seq_mean"):
        loss1, grad1 = run(logp, old, adv, agg)
        loss2, grad2 = run(torch.where(m, logp, garbage), torch.where(m, old, -garbage), torch.where(m, adv, garbage), agg)
        assert torch.equal(loss1, loss2) and torch.equal(grad1, grad2)
        assert torch.isfinite(grad2).all() and (grad2[~m] == 0).all()


def test_aggregate_token_vs_seq_mean() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 99.0, 99.0, 99.0], [7.0, 7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert aggregate(loss, mask, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq_mean").item() == pytest.approx((2 + 4) / 2)  # the empty row is left out
    assert aggregate(loss, mask, "token_mean", num_tokens=8).item() == pytest.approx(10 / 8)
    with pytest.raises(ValueError):
        aggregate(loss, mask, "sum")  # type: ignore[arg-type]


def test_token_mean_over_micro_batches_equals_full_batch() -> None:
    g = torch.Generator().manual_seed(2)
    loss = torch.randn(4, 7, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.3).int()
    n = float(mask.sum())
    parts = aggregate(loss[:2], mask[:2], num_tokens=n) + aggregate(loss[2:], mask[2:], num_tokens=n)
    assert parts.item() == pytest.approx(aggregate(loss, mask).item(), rel=1e-6)


def test_masked_mean() -> None:
    x = torch.tensor([[1.0, float("inf")], [3.0, 5.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_mean(x, mask, dim=-1).tolist() == [1.0, 4.0]
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_kl_estimators_hand_computed() -> None:
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.2)]])
    k1 = kl_penalty(logp, ref, "k1")
    k3 = kl_penalty(logp, ref, "k3")
    torch.testing.assert_close(k1, torch.tensor([[math.log(2), 0.0]]))
    torch.testing.assert_close(k3, torch.tensor([[0.5 + math.log(2) - 1, 0.0]]))
    assert (kl_penalty(torch.randn(3, 5), torch.randn(3, 5), "k3") >= 0).all()
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k2")  # type: ignore[arg-type]


def test_kl_term_ignores_masked_positions() -> None:
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([[1, 0, 1, 0]])
    logp, ref = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    garbage = torch.full((1, 4), 1e4)
    for est in ("k1", "k3"):
        a = aggregate(kl_penalty(logp, ref, est), mask)  # type: ignore[arg-type]
        p = torch.where(mask.bool(), logp, garbage).requires_grad_(True)
        b = aggregate(kl_penalty(p, torch.where(mask.bool(), ref, -garbage), est), mask)  # type: ignore[arg-type]
        b.backward()
        assert torch.equal(a, b.detach())
        assert torch.isfinite(p.grad).all() and (p.grad[~mask.bool()] == 0).all()  # type: ignore[index]
    assert (kl_penalty(logp, ref, "k1", mask=mask)[0, [1, 3]] == 0).all()


def test_value_loss_hand_computed() -> None:
    values = torch.tensor([[1.5, 1.1, 0.0]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0, 0.0]])
    ret = torch.tensor([[2.0, 2.0, 50.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = value_loss(values, old, ret, mask, clip=0.2)
    # token 0: clipped to 1.2 -> 0.5 * 0.8^2 = 0.32 (and no gradient); token 1: 0.5 * 0.9^2 = 0.405
    assert loss.item() == pytest.approx((0.32 + 0.405) / 2)
    assert stats["vf_clip_frac"] == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.9 / 2, 0.0]]))


def test_token_logprobs_matches_log_softmax_with_chunks() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 5, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    for temp in (1.0, 0.7):
        ours = token_logprobs(logits, labels, temperature=temp, chunk_rows=4)
        ref = torch.log_softmax(logits / temp, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(ours, ref)
        (g1,) = torch.autograd.grad(ours.sum(), logits)
        (g2,) = torch.autograd.grad(ref.sum(), logits)
        torch.testing.assert_close(g1, g2)


def test_token_logprobs_bf16_logits_computed_in_fp32() -> None:
    logits = torch.randn(2, 3, 50).to(torch.bfloat16)
    labels = torch.randint(0, 50, (2, 3))
    out = token_logprobs(logits, labels)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, ref)


def test_entropy_matches_definition_and_masking() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 9, generator=g)
    ent = entropy_from_logits(logits, chunk_rows=3)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(ent, -(p * p.log()).sum(-1))
    assert entropy_from_logits(torch.zeros(1, 1, 9)).item() == pytest.approx(math.log(9), rel=1e-6)
    # The entropy term of the loss is blind to observation positions.
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    garbage = torch.randn(2, 4, 9, generator=g) * 100
    perturbed = torch.where(mask.bool().unsqueeze(-1), logits, garbage)
    assert torch.equal(aggregate(ent, mask), aggregate(entropy_from_logits(perturbed, chunk_rows=3), mask))
