"""End to end: the real embedded model writes code, the real local sandbox runs it, the observation comes back."""

from __future__ import annotations

import pytest

from toolrl.config import load_config
from toolrl.types import ExecKind, Problem

pytestmark = pytest.mark.slow

PROBLEMS = [
    Problem("mul", "What is 4823 * 7719?", "37228737"),
    Problem("sum", "Compute 12345 + 67890 - 2222.", "78013"),
]


@pytest.fixture(scope="module")
def engine_and_sandbox(embedded_model_dir):
    from toolrl.rollout import build_engine
    from toolrl.sandbox import build_sandbox

    cfg = load_config(None, ["rollout.backend=hf", "rollout.max_new_tokens=160", "sandbox.pool_size=2"])
    engine = build_engine(cfg)
    sandbox = build_sandbox(cfg)
    yield cfg, engine, sandbox
    sandbox.close()


@pytest.mark.parametrize("max_calls", [0, 1])
def test_real_model_real_sandbox(engine_and_sandbox, max_calls: int) -> None:
    from toolrl.rollout import sampling_from_config
    from toolrl.rollout.loop import run_rollouts

    cfg, engine, sandbox = engine_and_sandbox
    cfg.tool.max_calls = max_calls
    trajs = run_rollouts(PROBLEMS, engine=engine, sandbox=sandbox, cfg=cfg, sampling=sampling_from_config(cfg, greedy=True))
    assert len(trajs) == 2
    for t in trajs:
        assert len(t.loss_mask) == len(t.response_ids) <= cfg.rollout.max_new_tokens
        assert t.num_calls <= max_calls
        # every observation token is masked and every masked token belongs to an observation
        obs_tokens = sum(len(s.token_ids) for s in t.segments if s.kind == "observation")
        assert t.num_observation_tokens == obs_tokens
        for call in t.calls:
            assert call.kind != ExecKind.INFRA, call
            assert call.observation in t.response_text
    if max_calls == 1:
        # with the one-shot instruction the embedded model writes and runs code on these (measured: both do)
        called = [t for t in trajs if t.calls]
        assert called, [t.response_text for t in trajs]
        ok = [c for t in called for c in t.calls if c.kind == ExecKind.OK]
        for c in ok:
            assert c.observation.lstrip("\n") == f"```output\n{c.stdout.rstrip()}\n```\n" or "..." in c.observation
    else:
        assert all(t.num_observation_tokens == 0 for t in trajs)
