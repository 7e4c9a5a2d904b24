"""Fast unit tests of the trainer's pure parts: batching and masks, update plumbing, checkpoints, data stream."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from toolrl.config.schema import AlgoConfig
from toolrl.train import checkpoint as ckpt
from toolrl.train.batch import chunks, loss_units, pack, pack_examples
from toolrl.train.data import ProblemStream
from toolrl.train.rl import select_for_update
from toolrl.train.sft_data import split_observations
from toolrl.train.update import PolicyUpdater, UpdatePlan, split_even
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory

PAD = 0


def traj(pid: str, prompt: list[int], segments: list[tuple[str, list[int]]], reward: float = 1.0,
         calls: list[ExecKind] | None = None) -> Trajectory:
    t = Trajectory(problem=Problem(pid, "q", "1"), sample_index=0, prompt_text="", prompt_ids=prompt)
    for kind, ids in segments:
        t.append(kind, "x", ids)  # type: ignore[arg-type]
    t.reward = reward
    t.calls = [ToolCall(code="", kind=k, observation="") for k in (calls or [])]
    return t


# -- batching and masks ---------------------------------------------------------------------------------------

def test_pack_aligns_responses_and_masks_only_model_tokens() -> None:
    a = traj("p1", [5, 6, 7], [("model", [10, 11]), ("observation", [20, 21, 22]), ("model", [12])])
    b = traj("p2", [8], [("model", [13])])
    batch = pack([a, b], PAD)
    P = batch.prompt_width
    assert P == 3 and batch.response_width == 6
    # left-padded prompts end at column P; responses start there
    assert batch.input_ids[1, :P].tolist() == [PAD, PAD, 8]
    assert batch.input_ids[0, P:].tolist() == [10, 11, 20, 21, 22, 12]
    assert batch.mask.tolist() == [[1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]]
    assert batch.attention_mask[1].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0]
    # positions start at 0 on each row's first real token
    assert batch.position_ids[1, 2].item() == 0 and batch.position_ids[0, 0].item() == 0
    assert batch.group_ids.tolist() == [0, 1]
    # padding and observation tokens both carry mask 0, model tokens 1: the token count is exact
    assert loss_units(batch.mask, "token_mean") == 4 and loss_units(batch.mask, "seq_mean") == 2


def test_pack_examples_masks_prompt_and_observations() -> None:
    batch = pack_examples([([1, 2, 3, 4], [0, 1, 0, 1]), ([5, 6], [0, 1])], PAD)
    assert batch.prompt_width == 1
    assert batch.response_ids.tolist() == [[2, 3, 4], [6, PAD, PAD]]
    assert batch.mask.tolist() == [[1, 0, 1], [1, 0, 0]]


def test_split_helpers() -> None:
    assert chunks(5, 2) == [[0, 1], [2, 3], [4]]
    assert split_even(4, 3) == [[0, 1], [2], [3]]


class TinyLM(torch.nn.Module):
    """A position-aware toy LM with the HF call signature (logits_to_keep), for exact loss checks."""

    def __init__(self, vocab: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):  # noqa: ANN001
        h = (self.emb(input_ids) * attention_mask[..., None]).cumsum(1)  # causal, blind to padding
        logits = self.head(torch.tanh(h))
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


class FakeEngine:
    """The DeepSpeed engine surface the updater uses, over a plain module with plain SGD."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.device = torch.device("cpu")
        self.opt = torch.optim.SGD(module.parameters(), lr=0.0)
        self.boundaries: list[bool] = []
        self.steps = 0

    def __call__(self, **kw):  # noqa: ANN003
        return self.module(**kw)

    def set_gradient_accumulation_boundary(self, b: bool) -> None:
        self.boundaries.append(b)

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        loss.backward()

    def step(self) -> None:
        if self.boundaries[-1]:
            self.steps += 1


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _accumulated_grad(trajs: list[Trajectory], micro: int, agg: str = "token_mean") -> torch.Tensor:
    model = TinyLM()
    eng = FakeEngine(model)
    upd = PolicyUpdater(eng, AlgoConfig(name="grpo", loss_agg=agg), temperature=1.0)
    stats = upd.run(pack(trajs, PAD), UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=micro))
    assert eng.boundaries[-1] is True and eng.boundaries.count(True) == 1 and eng.steps == 1
    assert "clip_frac" in stats and "entropy" in stats and stats["grad_norm"] > 0
    return _grads(model)


def _group() -> list[Trajectory]:
    return [
        traj("a", [1, 2], [("model", [3, 4]), ("observation", [5, 6, 7]), ("model", [8])], reward=1.0),
        traj("a", [1, 2], [("model", [9, 3, 4, 4])], reward=-1.0),
        traj("a", [1, 2], [("model", [4])], reward=-1.0),
        traj("b", [2], [("model", [3, 3, 3])], reward=1.0),
        traj("b", [2], [("model", [6, 7])], reward=-1.0),
    ]


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean", "seq-mean-token-sum-norm", "prompt-mean"])
def test_micro_batching_equals_one_big_batch(agg: str) -> None:
    full = _accumulated_grad(_group(), micro=5, agg=agg)
    split = _accumulated_grad(_group(), micro=2, agg=agg)
    assert full.abs().sum() > 0
    assert torch.allclose(full, split, atol=1e-6)


def test_observation_tokens_do_not_change_the_gradient() -> None:
    base = _group()
    other = _group()
    # Same model tokens, different observation tokens and an extra observation run: the loss must not move.
    other[0] = traj("a", [1, 2], [("model", [3, 4]), ("observation", [11, 12, 13]), ("model", [8])], reward=1.0)
    g1 = _accumulated_grad(base, micro=2)
    g2 = _accumulated_grad(other, micro=2)
    # The model token after the observation sees a different context, so compare a batch where it is absent.
    base[0] = traj("a", [1, 2], [("model", [3, 4]), ("observation", [5, 6, 7])], reward=1.0)
    other[0] = traj("a", [1, 2], [("model", [3, 4]), ("observation", [25, 26, 27, 28])], reward=1.0)
    assert torch.allclose(_accumulated_grad(base, micro=2), _accumulated_grad(other, micro=2), atol=1e-6)
    assert not torch.allclose(g1, g2)  # sanity: the context after an observation does matter


def test_padding_does_not_change_the_gradient() -> None:
    g = _accumulated_grad(_group(), micro=5)
    # A longer prompt and response widen every row's padding; its tokens are all observation (mask 0).
    padded = _group() + [traj("c", [1, 2, 3, 4, 5, 6, 7], [("observation", [1] * 12)], reward=0.0)]
    assert torch.allclose(g, _accumulated_grad(padded, micro=5), atol=1e-6)


def test_select_for_update_drops_infra_and_counts_zero_signal() -> None:
    trajs = [
        traj("a", [1], [("model", [2])], 1.0, [ExecKind.OK]),
        traj("a", [1], [("model", [2])], 1.0, [ExecKind.INFRA]),
        traj("a", [1], [("model", [2])], -1.0, [ExecKind.ERROR]),
        traj("b", [1], [("model", [2])], 1.0),
        traj("b", [1], [("model", [2])], 1.0),
    ]
    kept, stats = select_for_update(trajs, filter_zero_signal=False)
    assert len(kept) == 4 and stats["train/infra_dropped"] == 1 and stats["groups/zero_signal"] == 1
    kept, stats = select_for_update(trajs, filter_zero_signal=True)
    assert [t.problem.id for t in kept] == ["a", "a"] and stats["train/zero_signal_dropped"] == 2


def test_split_observations_torl_and_retool() -> None:
    text = "<code>\n```python\nprint(1)\n```\n</code>\n<interpreter>\n1\n</interpreter>\n<answer>1</answer>"
    pieces = split_observations(text, "retool")
    assert [obs for _, obs in pieces] == [False, True, False]
    assert "".join(p for p, _ in pieces) == text


# -- checkpoints -----------------------------------------------------------------------------------------------

def _write(content: str):
    def write(d: Path) -> None:
        (d / "weights.bin").write_text(content)
    return write


def test_checkpoint_publish_and_latest(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    assert ckpt.latest(root) is None
    ckpt.save(root, 5, {"step": 5}, _write("five"))
    ckpt.save(root, 10, {"step": 10}, _write("ten"))
    latest = ckpt.latest(root)
    assert latest is not None and latest.name == "step_000010"
    assert ckpt.read_state(latest)["step"] == 10 and (latest / "weights.bin").read_text() == "ten"
    ckpt.save(root, 15, {"step": 15}, _write("fifteen"), keep=2)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000010", "step_000015"]


def test_failure_mid_save_leaves_latest_valid(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    ckpt.save(root, 5, {"step": 5}, _write("five"))

    def crash(d: Path) -> None:
        (d / "weights.bin").write_text("half")
        raise KeyboardInterrupt("killed while saving")

    with pytest.raises(KeyboardInterrupt):
        ckpt.save(root, 10, {"step": 10}, crash)
    latest = ckpt.latest(root)
    assert latest is not None and latest.name == "step_000005"
    assert (latest / "weights.bin").read_text() == "five"
    assert not (root / "step_000010").exists()


def test_kill_mid_save_leaves_latest_valid(tmp_path: Path) -> None:
    """A SIGKILL runs no cleanup: the half-written temporary directory stays, and latest must ignore it."""
    root = tmp_path / "checkpoints"
    ckpt.save(root, 5, {"step": 5}, _write("five"))
    tmp = ckpt.begin(root, 10)
    (tmp / "weights.bin").write_text("half")  # ...and the process dies here
    assert ckpt.latest(root).name == "step_000005"  # type: ignore[union-attr]
    # A pointer to a directory without its COMPLETE marker is not trusted either.
    (root / "step_000010").mkdir()
    (root / ckpt.LATEST).write_text("step_000010\n")
    assert ckpt.latest(root).name == "step_000005"  # type: ignore[union-attr]
    # The next save clears the leftovers.
    ckpt.save(root, 15, {"step": 15}, _write("x"))
    assert not list(root.glob(".tmp-*")) and ckpt.latest(root).name == "step_000015"  # type: ignore[union-attr]


def test_rng_state_roundtrip() -> None:
    state = ckpt.rng_state()
    a = (torch.rand(3), __import__("random").random())
    ckpt.set_rng_state(state)
    b = (torch.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_problem_stream_resumes_exactly() -> None:
    probs = [Problem(str(i), "q", "a") for i in range(7)]
    s = ProblemStream(probs, seed=3)
    s.next(5)
    saved = json.loads(json.dumps(s.state()))
    expected = [p.id for p in s.next(6)]  # crosses an epoch boundary
    s2 = ProblemStream(probs, seed=3)
    s2.load_state(saved)
    assert [p.id for p in s2.next(6)] == expected


def test_trainer_modules_import_no_engine() -> None:
    """deepspeed, vllm and wandb load only when a run starts, not when the trainer's modules are imported."""
    import subprocess
    import sys

    code = ("import sys, toolrl.train, toolrl.train.runner, toolrl.train.rl, toolrl.train.update, toolrl.train.sft, "
            "toolrl.train.strategy, toolrl.train.distill, toolrl.cli.train_cmd\n"
            "print([m for m in ('deepspeed', 'vllm', 'wandb') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_kl_term_uses_the_reference_and_starts_at_zero() -> None:
    import copy

    model = TinyLM()
    ref = copy.deepcopy(model)
    upd = PolicyUpdater(FakeEngine(model), AlgoConfig(name="grpo", kl_coef=0.1), temperature=1.0, ref=ref)
    stats = upd.run(pack(_group(), PAD), UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=2))
    assert stats["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before any update
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05)
    stats = upd.run(pack(_group(), PAD), UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=2))
    assert stats["kl"] > 0


def test_several_optimizer_steps_freeze_old_logprobs_first() -> None:
    """With 2 mini-batches pi_old is computed before the first step, so the second mini-batch sees ratio != 1."""
    model = TinyLM()
    eng = FakeEngine(model)
    eng.opt = torch.optim.SGD(model.parameters(), lr=1.0)
    orig_step = eng.step

    def step() -> None:  # a real optimizer step at each boundary
        if eng.boundaries[-1]:
            eng.opt.step()
            eng.opt.zero_grad()
        orig_step()

    eng.step = step  # type: ignore[method-assign]
    upd = PolicyUpdater(eng, AlgoConfig(name="grpo"), temperature=1.0)
    batch = pack(_group(), PAD)
    stats = upd.run(batch, UpdatePlan(epochs=1, mini_batches=2, micro_batch_size=2))
    assert eng.steps == 2 and batch.old_logprobs is not None
    assert stats["approx_kl"] > 0  # the second mini-batch moved away from pi_old


# -- the RL step's update gate --------------------------------------------------------------------------------

class OneProcess:
    """The collective surface of toolrl.train.strategy.Strategy for a single process (no DeepSpeed needed)."""

    rank, world_size = 0, 1

    def all_sum(self, values: list[float]) -> list[float]:
        return list(values)

    all_max = all_sum

    def all_gather(self, obj):  # noqa: ANN001, ANN201
        return [obj]

    def gathered_params(self, module):  # noqa: ANN001, ANN201
        import contextlib

        return contextlib.nullcontext()


def _rl_step(trajs: list[Trajectory], **algo: object):  # noqa: ANN202
    """An RLStep whose rollout returns ``trajs``: everything after sampling (selection, gate, update) is real."""
    from types import SimpleNamespace

    from toolrl.config.schema import RootConfig
    from toolrl.rollout.engine import EngineCaps
    from toolrl.train.rl import RLStep

    cfg = RootConfig()
    cfg.train.prompts_per_step = len({t.problem.id for t in trajs})
    for k, v in algo.items():
        setattr(cfg.algo, k, v)
    eng = FakeEngine(TinyLM())

    class Fixed(RLStep):
        def rollout(self, problems, progress=None):  # noqa: ANN001, ANN201
            return trajs

    stream = ProblemStream([t.problem for t in trajs])
    step = Fixed(cfg, strategy=OneProcess(), policy=eng, tokenizer=SimpleNamespace(pad_token_id=PAD, eos_token_id=1),
                 rollout_engine=SimpleNamespace(caps=EngineCaps(shares_policy_weights=True)),  # like hf: no sync
                 sandbox=None, stream=stream)  # type: ignore[arg-type]
    return step, eng


def test_filter_zero_signal_keeps_the_update_when_flat_groups_outnumber_signal_groups() -> None:
    """One group with reward spread and two flat groups: the update must run (the gate once compared the flat
    groups' count against the groups left *after* filtering, and skipped)."""
    trajs = [
        traj("s", [1], [("model", [2, 3])], 1.0), traj("s", [1], [("model", [4])], -1.0),
        traj("f1", [1], [("model", [5])], -1.0), traj("f1", [1], [("model", [6])], -1.0),
        traj("f2", [1], [("model", [7])], 1.0), traj("f2", [1], [("model", [8])], 1.0),
    ]
    for flt in (True, False):
        step, eng = _rl_step(trajs, filter_zero_signal=flt, n_samples=2)
        metrics = step.run(1).metrics
        assert metrics["train/update_skipped"] == 0.0, f"filter_zero_signal={flt}"
        assert eng.steps == 1 and metrics["groups/zero_signal"] == 2


def test_update_is_skipped_when_no_group_has_signal() -> None:
    trajs = [traj("f1", [1], [("model", [5])], -1.0), traj("f1", [1], [("model", [6])], -1.0)]
    for flt in (True, False):
        step, eng = _rl_step(trajs, filter_zero_signal=flt, n_samples=2)
        assert step.run(1).metrics["train/update_skipped"] == 1.0 and eng.steps == 0


# -- stabiliser selection steps inside the RL step --------------------------------------------------------------

def _text_traj(pid: str, turns: list[tuple[str, str, list[int]]], reward: float, finish: str = "eos",
               correct: bool | None = None, calls: list[ExecKind] | None = None) -> Trajectory:
    t = Trajectory(problem=Problem(pid, "q", "1"), sample_index=0, prompt_text="", prompt_ids=[1, 2])
    for kind, text, ids in turns:
        t.append(kind, text, ids)  # type: ignore[arg-type]
    t.reward, t.finish_reason = reward, finish  # type: ignore[assignment]
    t.correct = reward > 0 if correct is None else correct
    t.calls = [ToolCall(code="", kind=k, observation="") for k in (calls or [])]
    return t


def _void_group(void_ids: list[int]) -> list[Trajectory]:
    code = "```python\nprint(1)\n```\n"
    return [
        _text_traj("a", [("model", code, [3, 4]), ("observation", "```output\n1\n```", [5]), ("model", "\\boxed{1}", [6])], 1.0,
                   calls=[ExecKind.OK]),
        _text_traj("a", [("model", code, [3, 7]), ("observation", "```output\n1\n```", [5]), ("model", "hmm", void_ids)], -1.0,
                   calls=[ExecKind.OK]),  # a void last turn: neither code nor an answer
        _text_traj("a", [("model", "so \\boxed{2}", [8, 9])], -1.0),
    ]


def test_void_turn_mask_gives_a_void_trajectory_zero_weight() -> None:
    from toolrl.train.select import is_void

    assert [is_void(t) for t in _void_group([10])] == [False, True, False]
    cut = _text_traj("b", [("model", "still thinking", [3])], -1.0, finish="length")
    assert not is_void(cut)  # cut by the budget: the overlong options handle it, not the void filter
    plain = _void_group([10])[1]
    plain.extracted_answer = "1"  # the grader found an answer in the last turn (e.g. a last-number rule)
    assert not is_void(plain)

    grads = {}
    for ids in ([10, 11], [12, 13]):  # same trajectories, different tokens in the void turn
        step, eng = _rl_step(_void_group(ids), void_turn_mask=True, n_samples=3)
        m = step.run(1).metrics
        assert m["train/void_masked"] == 1 and m["train/update_skipped"] == 0
        grads[tuple(ids)] = _grads(eng.module)
    assert torch.allclose(grads[(10, 11)], grads[(12, 13)], atol=1e-7)  # its tokens carry no weight
    step, eng = _rl_step(_void_group([12, 13]), void_turn_mask=False, n_samples=3)
    assert step.run(1).metrics["train/void_turns"] == 1
    assert not torch.allclose(_grads(eng.module), grads[(12, 13)])  # without the filter they do


def test_overlong_filter_and_soft_penalty_act_and_are_counted() -> None:
    group = [
        _text_traj("a", [("model", "\\boxed{1}", [3] * 3)], 1.0),
        _text_traj("a", [("model", "\\boxed{1} and on", [4] * 9)], 1.0, finish="length"),
        _text_traj("a", [("model", "\\boxed{2}", [5] * 7)], -1.0),
    ]
    step, _ = _rl_step(group, overlong_filter=True, n_samples=3)
    step.cfg.rollout.max_new_tokens = 9
    assert step.run(1).metrics["train/overlong_masked"] == 1
    # soft penalty over the last 4 of 9 tokens: lengths 3, 9, 7 -> 0, -1, -0.5 (the two right answers now differ)
    from toolrl.train.select import train_rewards

    rewards, stats = train_rewards(group, AlgoConfig(overlong_buffer=4), max_new_tokens=9)
    assert rewards.tolist() == pytest.approx([1.0, 0.0, -1.5]) and stats["train/overlong_penalized"] == 2


def test_roc_select_keeps_failures_and_the_cleanest_successes_of_each_group() -> None:
    from toolrl.train.rl import select_for_update

    ok, err = ExecKind.OK, ExecKind.ERROR
    group = [_text_traj("a", [("model", "x \\boxed{1}", [3])], 1.0, calls=c) for c in ([ok], [err, ok], [err, err, ok], [ok])]
    group += [_text_traj("a", [("model", "\\boxed{2}", [4])], -1.0, calls=[ok]) for _ in range(4)]
    kept, stats = select_for_update(group, False, roc_keep=4, rng=random.Random(0))
    assert len(kept) == 4 and stats["roc/dropped"] == 4 and stats["roc/dropped_correct"] == 2
    successes = [t for t in kept if t.correct]
    assert len(successes) == 2 and all(len(t.calls) == 1 for t in successes)  # the two without tool errors
    assert stats["roc/kept_penalty"] == 0.0 and stats["roc/dropped_penalty"] == pytest.approx(0.5 + 2 / 3)


def test_tis_and_mismatch_kl_use_the_sampler_logprobs() -> None:
    from toolrl.train.forward import response_logprobs

    def run(shift: float | None, **algo: object) -> tuple[torch.Tensor, dict[str, float]]:
        model = TinyLM()
        batch = pack(_group(), PAD)
        if shift is not None:  # the sampler's logprobs: the trainer's own, shifted
            with torch.no_grad():
                lp, _ = response_logprobs(model, batch, 1.0)
            batch.sampler_logprobs = lp + shift
            batch.sampler_valid = torch.ones(batch.size, dtype=torch.bool)
        else:
            batch.sampler_valid = torch.zeros(batch.size, dtype=torch.bool)
        upd = PolicyUpdater(FakeEngine(model), AlgoConfig(name="grpo", **algo), temperature=1.0)  # type: ignore[arg-type]
        stats = upd.run(batch, UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=2))
        return _grads(model), stats

    plain, stats = run(None)
    assert "mismatch_kl" not in stats  # no sampler logprobs, nothing to compare
    same, stats = run(0.0, tis_cap=2.0)
    assert stats["mismatch_kl"] == pytest.approx(0.0, abs=1e-6) and torch.allclose(same, plain, atol=1e-6)
    # sampler more confident by 1 nat everywhere: ratio e^-1 below the cap, every token's term scaled by it
    lower, stats = run(1.0, tis_cap=2.0)
    assert stats["mismatch_kl"] == pytest.approx(math.exp(-1), rel=1e-4)  # k3: r - 1 - log r with r = e^-1
    assert torch.allclose(lower, plain * math.exp(-1), atol=1e-6)
    # sampler less confident by 3 nats: ratio e^3 clipped at the cap 2
    capped, stats = run(-3.0, tis_cap=2.0)
    assert stats["tis/clip_frac"] == 1.0 and torch.allclose(capped, plain * 2.0, atol=1e-5)
    # sequence mask with threshold 2: every response's geometric ratio e^3 is outside, nothing is trained
    masked, stats = run(-3.0, tis_seq_threshold=2.0)
    assert stats["tis/seq_masked"] == 1.0 and masked.abs().sum() == 0


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "prompt-mean"])
def test_a_sequence_dropped_by_the_mismatch_mask_leaves_the_denominators_too(agg: str) -> None:
    """Row 1's sampler disagrees by 3 nats per token (geometric ratio e^3, outside [1/2, 2]); the others agree.
    The update must equal one in which row 1 never had loss tokens: zero weight alone would still count its tokens
    (or its sequence) in the mean and shrink every other row's gradient."""
    from toolrl.train.forward import response_logprobs

    def grads(batch, **algo: object) -> tuple[torch.Tensor, dict[str, float]]:
        torch.manual_seed(0)
        model = TinyLM()
        upd = PolicyUpdater(FakeEngine(model), AlgoConfig(name="grpo", loss_agg=agg, **algo), temperature=1.0)  # type: ignore[arg-type]
        stats = upd.run(batch, UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=2))
        return _grads(model), stats

    torch.manual_seed(0)
    batch = pack(_group(), PAD)
    with torch.no_grad():
        lp, _ = response_logprobs(TinyLM(), batch, 1.0)
    shift = torch.zeros(batch.size, 1)
    shift[1] = -3.0
    batch.sampler_logprobs = lp + shift
    batch.sampler_valid = torch.ones(batch.size, dtype=torch.bool)
    masked, stats = grads(batch, tis_seq_threshold=2.0)
    assert stats["tis/seq_masked"] == pytest.approx(1 / 5)
    assert stats["mismatch_kl"] > 0.1  # measured over every row, the dropped one included

    reference = pack(_group(), PAD)
    reference.mask[1] = 0
    expected, _ = grads(reference)
    assert masked.abs().sum() > 0 and torch.allclose(masked, expected, atol=1e-6)


def test_mismatch_kl_is_logged_on_steps_that_skip_the_update() -> None:
    flat = [traj("f1", [1], [("model", [5, 6])], -1.0), traj("f1", [1], [("model", [6, 7])], -1.0)]
    for t in flat:
        t.logprobs = [-1.0] * len(t.response_ids)  # what an engine reported
    for flt in (False, True):  # filtered out or not, the step's samples are measured
        step, eng = _rl_step(flat, n_samples=2, filter_zero_signal=flt)
        m = step.run(1).metrics
        assert m["train/update_skipped"] == 1 and eng.steps == 0
        assert m["mismatch_kl"] > 0  # TinyLM's logprobs are not -1 everywhere
