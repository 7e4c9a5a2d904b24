"""Progress that moves: the scheduler reports tokens and calls while trajectories run, for any step engine.

``TricklingEngine`` is a real step-protocol engine that decodes a fixed answer a few tokens per step, with a sleep
per step, like a slow CPU engine; the first turn of every trajectory writes a code block so calls happen too.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any, Sequence

from toolrl.config import load_config
from toolrl.rollout import run_rollouts
from toolrl.rollout.engine import EngineCaps, GenOutput, GenRequest, SamplingSpec
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind, Problem

CODE_TURN = "Let me compute.\n```python\nprint(2)\n```\n"
ANSWER_TURN = "So the result is \\boxed{2}."


class TricklingEngine:
    name = "trickling"
    caps = EngineCaps(returns_logprobs=False)

    def __init__(self, tokenizer: Any, per_step: int = 3, sleep_s: float = 0.02) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.per_step, self.sleep_s = per_step, sleep_s
        self.tokens_generated = 0
        self._turns: dict[str, int] = {}
        self._live: dict[str, tuple[list[int], int]] = {}  # key -> (tokens to emit, emitted so far)

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        turn = self._turns.get(req.request_id, 0)
        self._turns[req.request_id] = turn + 1
        text = CODE_TURN if turn == 0 else ANSWER_TURN
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if turn > 0:
            ids = ids + [self.tokenizer.eos_token_id]
        self._live[key] = (ids[: req.max_new_tokens], 0)

    def step(self) -> list[tuple[str, GenOutput]]:
        time.sleep(self.sleep_s)
        done = []
        for key, (ids, at) in list(self._live.items()):
            n = min(self.per_step, len(ids) - at)
            self.tokens_generated += n
            at += n
            if at < len(ids):
                self._live[key] = (ids, at)
                continue
            del self._live[key]
            if ids[-1] == self.tokenizer.eos_token_id:
                done.append((key, GenOutput(ids, "eos")))
            else:
                done.append((key, GenOutput(ids, "stop", "```\n")))
        return done

    def abort(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._live.pop(k, None)

    def has_unfinished(self) -> bool:
        return bool(self._live)

    def close(self) -> None:
        pass


class InstantSandbox:
    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> ExecResult:
        return ExecResult(kind=ExecKind.OK, stdout="2\n", duration_s=0.001)

    def close_session(self, session: str) -> None:
        pass

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def on_tokens(self, n: int) -> None:
        with self.lock:
            self.events.append(("tokens", n))

    def on_call(self) -> None:
        with self.lock:
            self.events.append(("call", None))

    def on_trajectory(self, traj: Any) -> None:
        with self.lock:
            self.events.append(("trajectory", traj))


PROBLEMS = [Problem(id=f"p{i}", problem="What is 1+1?", answer="2") for i in range(3)]


def _run(tokenizer, progress, n: int = 2):
    cfg = load_config(None, ["tool.max_calls=1", "rollout.max_new_tokens=200"])
    engine = TricklingEngine(tokenizer)
    trajs = run_rollouts(PROBLEMS, engine=engine, sandbox=InstantSandbox(), cfg=cfg,
                         sampling=SamplingSpec(temperature=0.0), n=n, progress=progress)
    return trajs, engine


def test_progress_fires_before_the_first_trajectory_ends(tokenizer) -> None:
    rec = Recorder()
    trajs, engine = _run(tokenizer, rec)
    kinds = [k for k, _ in rec.events]
    first_traj = kinds.index("trajectory")
    assert "tokens" in kinds[:first_traj] and "call" in kinds[:first_traj]
    # several token events per trajectory: the counter moves with decoding, not only at the end
    assert kinds[:first_traj].count("tokens") >= 5
    assert sum(n for k, n in rec.events if k == "tokens") == engine.tokens_generated
    assert kinds.count("call") == sum(len(t.calls) for t in trajs) == len(trajs)
    assert [t for k, t in rec.events if k == "trajectory"] and kinds.count("trajectory") == len(trajs) == 6


def test_a_plain_function_still_sees_each_trajectory_once(tokenizer) -> None:
    seen = []
    trajs, _ = _run(tokenizer, seen.append)
    assert sorted(id(t) for t in seen) == sorted(id(t) for t in trajs)
    assert all(t.finish_reason == "eos" and len(t.calls) == 1 for t in trajs)


def test_the_cli_bar_moves_and_shows_rates_before_any_sample_is_done(tokenizer) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from toolrl.cli.rollout_bar import RolloutBar, rollout_columns

    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    with Progress(*rollout_columns(), console=console, auto_refresh=False) as progress:
        bar = RolloutBar.add(progress, "eval", trajectories=6, budget=200)
        snapshots = []

        class Spy(RolloutBar):
            def on_trajectory(self, traj: Any) -> None:
                if not snapshots:  # the state just before the first sample is counted as done
                    task = progress.tasks[0]
                    snapshots.append((task.completed, task.fields["samples"], self.meter.calls, self.meter.tokens))
                super().on_trajectory(traj)

        spy = Spy(progress, bar.task, 6, 200)
        _run(tokenizer, spy)
        completed, samples, calls, tokens = snapshots[0]
        assert completed > 0 and samples == "0/6 samples" and calls >= 1 and tokens > 0
        task = progress.tasks[0]
        assert task.completed == task.total  # every trajectory done: the bar is full
        assert "tok/s" in task.fields["rates"] and spy.meter.tokens_per_s() > 0


def test_the_train_live_view_moves_with_tokens_within_a_step() -> None:
    from toolrl.cli.train_cmd import LiveView
    from toolrl.types import Trajectory

    view = LiveView(per_step=2, budget=10)
    with view:
        view.start(1, 3)
        roll = view.progress.tasks[view.roll_task]
        view.on_tokens(4)
        view.on_call()
        assert roll.completed == 4 and view.roll.meter.calls == 1 and roll.fields["samples"] == "0/2 samples"
        traj = Trajectory(problem=PROBLEMS[0], sample_index=0, prompt_text="", prompt_ids=[1])
        traj.correct = True
        view.on_trajectory(traj)  # no response tokens: its whole budget counts as done
        assert roll.completed == 14 and roll.fields["samples"] == "1/2 samples" and "100%" in roll.description
        view.step(1, {"reward/mean": 1.0, "time/step_s": 3.0})
        assert roll.completed == 0 and roll.fields["samples"] == "0/2 samples"  # the next step starts afresh
        assert view.progress.tasks[view.steps_task].fields["samples"] == "1/3 steps"


def test_the_train_live_view_keeps_the_engine_header_on_screen(monkeypatch) -> None:
    from rich.console import Console

    import toolrl.cli.train_cmd as train_cmd

    out = io.StringIO()
    monkeypatch.setattr(train_cmd, "err_console", Console(file=out, width=200))
    view = train_cmd.LiveView(per_step=2, budget=10)
    with view:
        view.header("rollout engine: hf (auto, training on CPU: ...)")
        view.phase("building engines")  # later phases replace the bar's text, not the header line
    assert "rollout engine: hf (auto, training on CPU: ...)" in out.getvalue()
