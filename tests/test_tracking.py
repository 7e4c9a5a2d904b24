"""Metrics store, rollout metrics and the Tracker (W&B offline / disabled only: no network)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from toolrl.config.schema import RootConfig
from toolrl.tracking import MetricsStore, Tracker, read, rollout_metrics, rollouts_path, wandb_mode
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory


def _traj(pid: str, i: int, reward: float, kinds: list[ExecKind], obs_tokens: int = 2) -> Trajectory:
    t = Trajectory(Problem(pid, f"what is {pid}?", "42"), i, "prompt", [1, 2])
    t.append("model", "think ```python\nprint(42)\n```", [10, 11, 12, 13])
    for k in kinds:
        t.calls.append(ToolCall(code="print(42)", kind=k, observation="42"))
        t.append("observation", "```output\n42\n```", [20] * obs_tokens)
        t.append("model", " so \\boxed{42}", [14, 15])
    t.reward, t.correct = reward, reward > 0
    return t


def _cfg(wandb: bool = False, log_rollouts: int = 8) -> RootConfig:
    cfg = RootConfig()
    cfg.tracking.wandb = wandb
    cfg.train.log_rollouts = log_rollouts
    return cfg


# --- metrics store -------------------------------------------------------------------------------------------


def test_store_roundtrip_adds_step_and_time_and_cleans_values(tmp_path: Path) -> None:
    before = time.time()
    with MetricsStore(tmp_path) as store:
        store.log(1, {"reward/mean": torch.tensor(0.5), "acc": 1, "kl": float("nan"), "lr": 2e-5})
        store.log(2, {"reward/mean": 0.75})
    recs = read(tmp_path)
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["reward/mean"] == 0.5 and recs[0]["acc"] == 1 and recs[0]["kl"] is None
    assert before <= recs[0]["time"] <= recs[1]["time"] <= time.time()
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert read(tmp_path / "nope") == []


def test_truncated_last_line_is_skipped_and_repaired_before_appending(tmp_path: Path) -> None:
    with MetricsStore(tmp_path) as store:
        store.log(0, {"a": 1.0})
        store.log(1, {"a": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "time": 1.0, "a"')  # what a kill in the middle of a write leaves
    assert [r["step"] for r in read(tmp_path)] == [0, 1]
    with MetricsStore(tmp_path) as store:  # a resumed run appends after the last complete record
        store.log(2, {"a": 3.0})
    assert [r["step"] for r in read(tmp_path)] == [0, 1, 2]
    assert all(json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_store_survives_sigkill(tmp_path: Path) -> None:
    code = (
        "import sys; from toolrl.tracking import MetricsStore\n"
        "s = MetricsStore(sys.argv[1]); i = 0\n"
        "while True:\n"
        "    s.log(i, {'x': 'y' * 2000, 'i': i}); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    deadline = time.time() + 60
    while time.time() < deadline and len(read(tmp_path)) < 200:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recs = read(tmp_path)
    assert len(recs) >= 200
    assert [r["step"] for r in recs] == list(range(len(recs)))  # complete, in order, no glued lines


def test_rewind_drops_steps_after_checkpoint(tmp_path: Path) -> None:
    with MetricsStore(tmp_path) as store:
        for s in range(6):
            store.log(s, {"a": float(s)})
        assert store.rewind(3) == 2
        store.log(4, {"a": 40.0})
    recs = read(tmp_path)
    assert [r["step"] for r in recs] == [0, 1, 2, 3, 4] and recs[-1]["a"] == 40.0


# --- rollout metrics -----------------------------------------------------------------------------------------


def test_rollout_metrics_hand_computed() -> None:
    trajs = [
        _traj("p1", 0, 1.0, [ExecKind.OK]),  # 4 + 2 + 2 = 8 tokens, 2 observation
        _traj("p1", 1, -1.0, [ExecKind.ERROR, ExecKind.INFRA]),  # 4 + 2*(2+2) = 12 tokens, 4 observation
        _traj("p2", 0, -1.0, []),  # 4 tokens, no code
        _traj("p2", 1, 1.0, [ExecKind.TIMEOUT]),  # 8 tokens, 2 observation
    ]
    m = rollout_metrics(trajs)
    assert m["reward/mean"] == 0.0
    assert m["acc"] == 0.5
    assert m["code/share"] == 0.75
    assert m["code/success_rate"] == pytest.approx(1 / 3)  # 1 ok of 3 calls that were not infrastructure failures
    assert m["code/calls_per_response"] == 1.0
    assert m["response/len"] == (8 + 12 + 4 + 8) / 4
    assert m["obs/token_share"] == pytest.approx(8 / 32)
    assert m["sandbox/ok"] == 1 and m["sandbox/error"] == 1 and m["sandbox/infra_error"] == 1
    assert m["sandbox/timeout"] == 1 and m["sandbox/resource_limit"] == 0


def test_rollout_metrics_edge_cases() -> None:
    assert rollout_metrics([]) == {}
    t = _traj("p", 0, 0.0, [])
    t.reward = t.correct = None
    m = rollout_metrics([t])
    assert "reward/mean" not in m and "acc" not in m and "code/success_rate" not in m
    assert m["code/share"] == 0.0 and m["obs/token_share"] == 0.0


# --- tracker -------------------------------------------------------------------------------------------------


def test_wandb_mode_detection(tmp_path: Path) -> None:
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password x\n")
    empty = tmp_path / "empty"
    empty.write_text("")
    assert wandb_mode({"NETRC": str(empty)}) == "offline"
    assert wandb_mode({"NETRC": str(netrc_file)}) == "online"
    assert wandb_mode({"NETRC": str(empty), "WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode({"NETRC": str(netrc_file), "WANDB_MODE": "disabled"}) == "disabled"
    assert wandb_mode({"NETRC": str(tmp_path / "missing"), "HOME": str(tmp_path)}) == "offline"
    # A netrc entry for another host does not count when WANDB_BASE_URL points elsewhere.
    assert wandb_mode({"NETRC": str(netrc_file), "WANDB_BASE_URL": "https://wandb.example.com"}) == "offline"


def test_tracker_without_wandb_writes_store_and_rollouts(tmp_path: Path) -> None:
    trajs = [_traj(f"p{i // 4}", i % 4, 1.0 if i % 2 else -1.0, [ExecKind.OK]) for i in range(16)]
    with Tracker(_cfg(wandb=False, log_rollouts=4), tmp_path, resume=False) as tr:
        assert tr.wandb_run is None
        tr.log(3, {"reward/mean": 0.0})
        path = tr.log_rollouts(3, trajs)
    assert path == rollouts_path(tmp_path, 3) == tmp_path / "rollouts" / "step_000003.jsonl"
    saved = [Trajectory.from_dict(json.loads(x)) for x in path.read_text().splitlines()]
    assert len(saved) == 4
    assert len({t.problem.id for t in saved}) == 4  # spread over the batch, not the first problem's group
    assert saved[0].response_ids == trajs[0].response_ids and saved[0].reward == trajs[0].reward
    assert [r["step"] for r in read(tmp_path)] == [3]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_run_id").exists()


def test_tracker_log_rollouts_off(tmp_path: Path) -> None:
    with Tracker(_cfg(log_rollouts=0), tmp_path) as tr:
        assert tr.log_rollouts(1, [_traj("p", 0, 1.0, [])]) is None
    assert not (tmp_path / "rollouts").exists()


def test_tracker_wandb_disabled_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Tracker(_cfg(wandb=True), tmp_path) as tr:
        assert tr.wandb_run is None
        tr.log(0, {"a": 1.0})
    assert read(tmp_path)[0]["a"] == 1.0


def test_tracker_offline_wandb_and_resume_reuses_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = _cfg(wandb=True)
    cfg.tracking.group, cfg.tracking.tags = "sweep-a", ["c1"]
    tr = Tracker(cfg, tmp_path, resume=False)
    run = tr.wandb_run
    assert run is not None and run.group == "sweep-a" and "c1" in run.tags
    tr.log(0, {"reward/mean": 0.1})
    tr.log_rollouts(0, [_traj("p", 0, 1.0, [ExecKind.OK])])
    tr.finish()
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert run.id == run_id
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))

    resumed = Tracker(cfg, tmp_path, resume=True)
    assert resumed.wandb_run.id == run_id
    resumed.log(1, {"reward/mean": 0.2})
    resumed.finish()
    fresh = Tracker(cfg, tmp_path, resume=False)
    assert fresh.wandb_run.id != run_id
    fresh.finish()
    assert [r["step"] for r in read(tmp_path)] == [0, 1]


def test_tracker_survives_wandb_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def broken_init(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no route to host")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", broken_init)
    with Tracker(_cfg(wandb=True), tmp_path) as tr:
        assert tr.wandb_run is None
        tr.log(0, {"a": 1.0})
    assert read(tmp_path)[0]["a"] == 1.0


def test_tracker_inside_a_wandb_sweep_agent_logs_into_the_agents_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun42")
    tr = Tracker(_cfg(wandb=True), tmp_path, resume=False)
    try:
        assert tr.wandb_run is not None and tr.wandb_run.id == "agentrun42"
    finally:
        tr.finish()
    assert (tmp_path / "wandb_run_id").read_text().strip() == "agentrun42"
