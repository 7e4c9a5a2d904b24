"""The stabilisers' defining properties: dual-clip PPO, loss aggregation modes, TIS and the mismatch metric,
DAPO's over-long penalty, GRPO-RoC's down-sampling and global advantage whitening."""

from __future__ import annotations

import math
import random

import pytest
import torch

from toolrl.algos import (
    agg_units,
    agg_weights,
    aggregate,
    canonical_loss_agg,
    masked_whiten,
    mismatch_kl,
    overlong_penalty,
    policy_loss,
    roc_downsample,
    sequence_mismatch_keep,
    truncated_is_weights,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=80, deadline=None)


# -- dual-clip PPO ----------------------------------------------------------------------------------------------

def _verl_dual_clip(log_ratio: torch.Tensor, adv: torch.Tensor, lo: float, hi: float, c: float) -> torch.Tensor:
    """verl 0.9.1 core_algos.compute_policy_loss_vanilla, written out from its definition (per token)."""
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    clip1 = torch.maximum(l1, l2)
    l3 = -adv * c
    clip2 = torch.minimum(l3, clip1)
    return torch.where(adv < 0, clip2, clip1)


@SETTINGS
@given(
    log_ratio=st.lists(st.floats(-3, 3), min_size=1, max_size=16),
    # Advantages are 0 or of a size float64 resolves: at subnormal magnitudes -c*A and the clipped loss round to
    # the same value, and "which clip bound is active" stops being decidable in floating point.
    adv=st.lists(st.floats(-5, 5).filter(lambda x: x == 0 or abs(x) > 1e-6), min_size=16, max_size=16),
    c=st.floats(1.01, 10),
)
def test_dual_clip_caps_negative_advantage_loss_at_minus_c_a(log_ratio: list[float], adv: list[float], c: float) -> None:
    n = len(log_ratio)
    lr = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([adv[:n]], dtype=torch.float64)
    mask = torch.ones(1, n)
    # per-token losses: aggregate with token-sum weights (units=1 and weights 1) to read them back one by one
    per_token = []
    for t in range(n):
        m = torch.zeros(1, n)
        m[0, t] = 1
        loss, _ = policy_loss(lr, torch.zeros(1, n, dtype=torch.float64), a, m, 0.2, 0.28, dual_clip_c=c)
        per_token.append(loss)
    got = torch.stack(per_token)
    ref = _verl_dual_clip(lr.detach()[0], a[0], 0.2, 0.28, c)
    assert torch.allclose(got.detach(), ref, atol=1e-9)
    neg = a[0] < 0
    # the defining property: for A < 0 no token loss exceeds -c * A; for A >= 0 nothing changes
    assert bool((got.detach()[neg] <= (-c * a[0])[neg] + 1e-9).all())
    plain = torch.stack([policy_loss(lr, torch.zeros(1, n, dtype=torch.float64), a, torch.eye(n)[t:t + 1], 0.2, 0.28)[0]
                         for t in range(n)])
    assert torch.allclose(got.detach()[~neg], plain.detach()[~neg])
    _, stats = policy_loss(lr, torch.zeros(1, n, dtype=torch.float64), a, mask, 0.2, 0.28, dual_clip_c=c)
    expected_lower = float(((torch.exp(lr.detach()[0]) > c) & neg).double().mean())
    assert stats["clip_frac_lower"] == pytest.approx(expected_lower)


def test_dual_clip_stops_the_gradient_past_c_only_for_negative_advantages() -> None:
    def grad(ratio: float, adv: float, c: float | None) -> float:
        lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
        loss, _ = policy_loss(lp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), 0.2, 0.28, dual_clip_c=c)
        loss.backward()
        return lp.grad.item()  # type: ignore[union-attr]

    assert grad(5.0, -1.0, None) == pytest.approx(5.0)  # plain PPO: grows with the ratio
    assert grad(5.0, -1.0, 3.0) == 0.0  # dual-clip: flat past c
    assert grad(2.0, -1.0, 3.0) == pytest.approx(2.0)  # below c: unchanged
    assert grad(5.0, 1.0, 3.0) == grad(5.0, 1.0, None) == 0.0  # positive advantages untouched (clipped above)


# -- loss aggregation modes -------------------------------------------------------------------------------------

def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two prompts: group 0 holds responses of 1 and 3 model tokens, group 1 one response of 4 tokens."""
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float32)
    gids = torch.tensor([0, 0, 1])
    loss = torch.ones(3, 4)
    return loss, mask, gids


def test_aggregation_modes_give_their_documented_values_and_ratios() -> None:
    loss, mask, gids = _batch()
    tok = aggregate(loss, mask, "token-mean").item()
    seq = aggregate(loss, mask, "seq-mean-token-mean").item()
    drg = aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=8).item()
    pm = aggregate(loss, mask, "prompt-mean", group_ids=gids).item()
    # A constant per-token loss l: every mean mode gives l; Dr. GRPO gives l * mean(n_i) / L = (1+3+4)/3/8.
    assert tok == pytest.approx(1.0) and seq == pytest.approx(1.0) and pm == pytest.approx(1.0)
    assert drg / tok == pytest.approx((8 / 3) / 8)
    # Per-token weights (the gradient each token gets): token-mean weighs every token alike; seq-mean-token-mean
    # gives a token of the 1-token response 3x the weight of a token of the 3-token one; prompt-mean gives the
    # 4-token group's tokens 1/4 and group 0's tokens 1/4 as well (both groups hold 4 tokens) over 2 prompts.
    w_tok = agg_weights(mask, "token-mean") / agg_units(mask, "token-mean")
    w_seq = agg_weights(mask, "seq-mean-token-mean") / agg_units(mask, "seq-mean-token-mean")
    w_pm = agg_weights(mask, "prompt-mean", gids) / agg_units(mask, "prompt-mean", gids)
    assert w_tok[0, 0] / w_tok[1, 0] == pytest.approx(1.0)
    assert w_seq[0, 0] / w_seq[1, 0] == pytest.approx(3.0)
    assert w_seq[0, 0].item() == pytest.approx(1 / 3) and w_pm[0, 0].item() == pytest.approx(1 / 8)
    for w in (w_tok, w_seq, w_pm):
        assert w.sum().item() == pytest.approx(1.0)
        assert w[mask == 0].abs().sum() == 0


def test_old_aggregation_names_are_aliases() -> None:
    loss, mask, _ = _batch()
    loss = loss * torch.arange(1, 5)
    assert canonical_loss_agg("token_mean") == "token-mean" and canonical_loss_agg("seq_mean") == "seq-mean-token-mean"
    assert aggregate(loss, mask, "token_mean").item() == aggregate(loss, mask, "token-mean").item()
    assert aggregate(loss, mask, "seq_mean").item() == aggregate(loss, mask, "seq-mean-token-mean").item()
    with pytest.warns(FutureWarning, match="token-mean"):
        canonical_loss_agg("token_mean", warn=True)
    with pytest.raises(ValueError):
        canonical_loss_agg("sum")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "prompt-mean"])
def test_mini_batch_weights_make_micro_batches_exact(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    gids = torch.tensor([0, 0, 1, 1, 2, 2])
    w = agg_weights(mask, mode, gids, max_len=7)  # type: ignore[arg-type]
    units = agg_units(mask, mode, gids)  # type: ignore[arg-type]
    whole = aggregate(loss, mask, mode, group_ids=gids, max_len=7)  # type: ignore[arg-type]
    # a group split across micro-batches (rows 1 | 2 cut group 0 / 1) still sums to the whole
    parts = sum(aggregate(loss[i:j], mask[i:j], mode, weights=w[i:j], units=units) for i, j in ((0, 1), (1, 4), (4, 6)))  # type: ignore[arg-type]
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6, abs=1e-7)


# -- truncated importance sampling and the mismatch metric ------------------------------------------------------

def test_tis_clips_at_the_bound_and_keeps_ratios_below_it() -> None:
    train = torch.tensor([[math.log(5.0), math.log(0.5), 0.0, math.log(2.0)]])
    sampler = torch.zeros(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    w, stats = truncated_is_weights(train, sampler, mask, cap=2.0)
    assert w.tolist()[0][:3] == pytest.approx([2.0, 0.5, 1.0])
    assert w[0, 3].item() == 0.0  # off the mask
    assert stats["tis/clip_frac"] == pytest.approx(1 / 3)


@SETTINGS
@given(diff=st.lists(st.sampled_from([1e4, -1e4, 1e30, -1e30, 88.0, 89.0, 0.0, float("inf"), float("-inf"), float("nan")]),
                     min_size=1, max_size=8))
def test_no_nan_or_inf_with_huge_logprob_differences(diff: list[float]) -> None:
    train = torch.tensor([diff])
    sampler = torch.zeros_like(train)
    mask = torch.ones_like(train)
    w, stats = truncated_is_weights(train, sampler, mask, cap=2.0)
    assert torch.isfinite(w).all() and bool((w <= 2.0).all()) and bool((w >= 0).all())
    assert all(math.isfinite(v) for v in stats.values())
    kl = mismatch_kl(train, sampler, mask)
    assert math.isfinite(kl) and kl >= 0
    keep = sequence_mismatch_keep(train, sampler, mask, threshold=2.0)
    assert keep.dtype == torch.bool


def test_mismatch_kl_is_zero_when_sampler_and_trainer_agree() -> None:
    lp = torch.randn(3, 6).clamp(max=0)
    mask = torch.ones(3, 6)
    assert mismatch_kl(lp, lp, mask) == 0.0
    assert mismatch_kl(lp, lp - 0.1, mask) > 0
    # observation tokens (mask 0) with wildly different values change nothing
    noisy = torch.where(torch.arange(6) < 3, lp, lp + 1e6)
    half = torch.ones(3, 6) * (torch.arange(6) < 3)
    assert mismatch_kl(noisy, lp, half) == 0.0


def test_sequence_mask_drops_rows_whose_geometric_ratio_leaves_the_band() -> None:
    train = torch.tensor([[0.1, 0.1], [1.0, 1.0], [-1.0, -1.0], [5.0, 0.0]])
    keep = sequence_mismatch_keep(train, torch.zeros(4, 2), torch.ones(4, 2), threshold=2.0)
    assert keep.tolist() == [True, False, False, False]  # exp(2.5) > 2: the mean log-ratio decides


# -- DAPO soft over-long punishment -----------------------------------------------------------------------------

@SETTINGS
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=20), buffer=st.integers(1, 100))
def test_overlong_penalty_is_zero_then_linear_then_minus_one(lengths: list[int], buffer: int) -> None:
    L = 200
    pen = overlong_penalty(torch.tensor(lengths), L, buffer).tolist()
    for n, p in zip(lengths, pen):
        if n <= L - buffer:
            assert p == 0.0
        elif n <= L:
            assert p == pytest.approx(-(n - (L - buffer)) / buffer)
        else:
            assert p == -1.0
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    assert all(pen[order[i]] >= pen[order[i + 1]] for i in range(len(order) - 1))  # longer never pays less


# -- GRPO-RoC ---------------------------------------------------------------------------------------------------

@SETTINGS
@given(
    group=st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5])), min_size=2, max_size=32),
    keep_frac=st.floats(0.2, 0.9),
    seed=st.integers(0, 1000),
)
def test_roc_keeps_the_failure_share_and_the_cleanest_successes(group: list[tuple[bool, float]], keep_frac: float,
                                                                 seed: int) -> None:
    correct = [c for c, _ in group]
    pen = [p for _, p in group]
    keep = max(1, int(len(group) * keep_frac))
    idx = roc_downsample(correct, pen, keep, random.Random(seed))
    assert len(idx) == min(keep, len(group)) and len(set(idx)) == len(idx) and idx == sorted(idx)
    kept_pos = [i for i in idx if correct[i]]
    dropped_pos = [i for i in range(len(group)) if correct[i] and i not in idx]
    if kept_pos and dropped_pos:  # every kept success is at least as clean as every dropped one
        assert max(pen[i] for i in kept_pos) <= min(pen[i] for i in dropped_pos)
    n_pos, n_neg = sum(correct), len(group) - sum(correct)
    if n_pos and n_neg and keep >= 2:  # both kinds survive, so the group keeps its signal
        assert 0 < len(kept_pos) < len(idx)
        assert abs(len(kept_pos) - keep * n_pos / len(group)) <= 1.0  # the group's proportion, rounded


def test_roc_picks_failures_uniformly_not_by_quality() -> None:
    """Failures are kept as they are: over many draws each failure is kept about equally often, whatever its
    penalty, while successes are kept strictly by penalty."""
    correct = [False] * 8 + [True] * 8
    pen = [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0] * 2
    counts = [0] * 16
    rng = random.Random(0)
    for _ in range(2000):
        for i in roc_downsample(correct, pen, 8, rng):
            counts[i] += 1
    fail = counts[:8]
    assert min(fail) > 0.4 * 2000 and max(fail) < 0.6 * 2000  # each failure kept ~half the time
    assert counts[8:12] == [2000] * 4 and counts[12:] == [0] * 4  # the clean successes always, the others never


# -- global advantage whitening ---------------------------------------------------------------------------------

def test_whitening_with_an_identity_reduce_is_the_local_unbiased_whitening() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.4).float()
    a = masked_whiten(x, mask)
    b = masked_whiten(x, mask, reduce=lambda v: list(v))
    assert torch.equal(a, b)
    vals = x[mask.bool()]
    ref = (vals - vals.mean()) / torch.sqrt(vals.var(unbiased=True) + 1e-8)
    assert torch.allclose(a[mask.bool()], ref, atol=1e-6)


def _whiten_worker(rank: int, world: int, port: int, x: torch.Tensor, mask: torch.Tensor, out: dict) -> None:  # noqa: ANN001
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)

    def all_sum(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    rows = slice(0, 3) if rank == 0 else slice(3, 8)  # unequal shares, as after dropping trajectories
    out[rank] = masked_whiten(x[rows], mask[rows], reduce=all_sum)
    dist.destroy_process_group()


@pytest.mark.slow
def test_global_whitening_over_two_gloo_ranks_equals_whitening_the_concatenated_batch() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 6, generator=g) * 3 + 1
    mask = (torch.rand(8, 6, generator=g) > 0.3).float()
    mask[:3] *= torch.tensor([1, 1, 0, 0, 0, 0.0])  # rank 0 holds short responses: its own stats differ
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_whiten_worker, args=(2, port, x, mask, out), nprocs=2, join=True)
    together = masked_whiten(x, mask)
    assert torch.allclose(torch.cat([out[0], out[1]]), together, atol=1e-6)
    assert not torch.allclose(out[0], masked_whiten(x[:3], mask[:3]), atol=1e-3)  # per-rank whitening differs


# -- the shipped sweeps -----------------------------------------------------------------------------------------

MECHANISMS = {  # sweep file -> (key, the value that switches the mechanism off)
    "void_turn.yaml": ("void_turn_mask", False),
    "roc.yaml": ("roc_oversample", 0),
    "overlong.yaml": ("overlong_buffer", 0),
    "loss_agg.yaml": ("loss_agg", "token-mean"),
    "tis.yaml": ("tis_cap", None),
    "dual_clip.yaml": ("dual_clip_c", None),
    "paper/simpletir_void_turn.yaml": ("void_turn_mask", False),
    "paper/rstar2_roc.yaml": ("roc_oversample", 0),
    "paper/dapo_overlong.yaml": ("overlong_buffer", 0),
    "paper/dr_grpo_loss_agg.yaml": ("loss_agg", "token-mean"),
    "paper/tis_vllm.yaml": ("tis_cap", None),
    "paper/verl_retool_dual_clip.yaml": ("dual_clip_c", None),
}


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_each_stabiliser_has_a_sweep_that_loads_and_switches_it(name: str) -> None:
    from pathlib import Path

    from toolrl.sweep.spec import load_spec, validate_runs

    path = Path(__file__).resolve().parents[1] / "sweeps" / name
    runs = validate_runs(load_spec(path))  # the real loader: every run's full config is built and checked
    key, off = MECHANISMS[name]
    values = [getattr(cfg.algo, key) for _, cfg in runs]
    assert off in values and any(v != off for v in values), values
    if not name.startswith("paper/"):
        assert all(cfg.model.path is None for _, cfg in runs)  # CPU-sized: the embedded model
