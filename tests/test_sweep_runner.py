"""Local runner through the real trial function, with a stand-in trainer subprocess (tests/test_sweep_standin.py):
every run gets its run directory, a failing run is recorded and does not stop the others, re-running skips
finished runs and resumes interrupted ones with --resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from test_sweep_standin import launcher
from toolrl.sweep.local import prepare_sweep_dir, run_local, threads_per_run
from toolrl.sweep.spec import SweepSpecError, parse_spec
from toolrl.sweep.status import read_status
from toolrl.sweep.trial import run_trial


def small_spec(**extra):
    raw = {"name": "t", "axes": {"tool.max_calls": [0, 1, 2]}, "base": {"overrides": {"train.steps": 4}},
           "eval": {"benchmarks": ["arith"]}, **extra}
    return parse_spec(raw)


def invocations(run_dir: Path) -> list[list[str]]:
    path = run_dir / "invocations.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(spec, sweep_dir, **kw):
    return run_local(spec, spec.runs(), sweep_dir, launcher=launcher(), show_progress=False, **kw)


def test_all_runs_finish_in_their_own_run_dirs(tmp_path):
    spec = small_spec()
    results = run(spec, tmp_path, threads=2)
    assert [r.state for r in results] == ["finished"] * 3
    for r in spec.runs():
        d = tmp_path / "runs" / r.name
        assert (d / "final").is_dir() and (d / "metrics.jsonl").is_file()
        assert read_status(d).state == "finished"
        assert (d / "threads.txt").read_text() == "2"  # the thread share reached the trainer
        [argv] = invocations(d)
        assert argv[:3] == ["train", "--out", str(d)]
        assert f"tool.max_calls={r.values['tool.max_calls']}" in argv
    table = json.loads((tmp_path / "status.json").read_text())
    assert [row["state"] for row in table] == ["finished"] * 3
    assert [row["steps_done"] for row in table] == [4, 4, 4]


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    spec = small_spec()
    bad = spec.runs()[1].name
    monkeypatch.setenv("STANDIN_FAIL", bad)
    results = run(spec, tmp_path)
    assert {r.name: r.state for r in results} == {spec.runs()[0].name: "finished", bad: "failed",
                                                  spec.runs()[2].name: "finished"}
    st = read_status(tmp_path / "runs" / bad)
    assert st.state == "failed" and st.returncode == 3
    assert "stand-in exploded on purpose" in st.error
    # Re-running retries only the failed run (and it now succeeds).
    monkeypatch.delenv("STANDIN_FAIL")
    results = run(spec, tmp_path)
    assert {r.name: r.state for r in results}[bad] == "finished"
    assert sorted(r.state for r in results) == ["finished", "skipped", "skipped"]
    # The first attempt had no checkpoint: it restarted clean, its files kept under attempts/.
    assert (tmp_path / "attempts" / f"{bad}.1" / "config.yaml").is_file()
    assert len(invocations(tmp_path / "runs" / bad)) == 1


def test_a_run_killed_by_sigkill_says_what_likely_killed_it_and_resumes(tmp_path, monkeypatch):
    spec = small_spec(axes={"tool.max_calls": [1]})
    (plan,) = spec.runs()
    monkeypatch.setenv("STANDIN_STOP_AT", "2")
    monkeypatch.setenv("STANDIN_KILLED", "1")
    res = run_trial(plan, tmp_path / plan.name, launcher=launcher())
    assert res.state == "failed" and res.returncode == -9
    assert "killed by SIGKILL" in res.error and "out-of-memory" in res.error and "--parallel" in res.error
    monkeypatch.delenv("STANDIN_STOP_AT")
    monkeypatch.delenv("STANDIN_KILLED")
    res = run_trial(plan, tmp_path / plan.name, launcher=launcher())
    assert res.state == "finished" and res.resumed


def test_rerun_skips_finished_and_resumes_interrupted_runs(tmp_path, monkeypatch):
    spec = small_spec(axes={"tool.max_calls": [0, 1]})
    first, second = spec.runs()
    # First run finishes; second is "killed" after step 2 with a checkpoint.
    run_trial(first, tmp_path / "runs" / first.name, launcher=launcher())
    monkeypatch.setenv("STANDIN_STOP_AT", "2")
    res = run_trial(second, tmp_path / "runs" / second.name, launcher=launcher())
    assert res.state == "failed"
    monkeypatch.delenv("STANDIN_STOP_AT")
    prepare_sweep_dir(spec, tmp_path)
    results = run(spec, tmp_path)
    assert [r.state for r in results] == ["skipped", "finished"]
    assert results[1].resumed
    assert len(invocations(tmp_path / "runs" / first.name)) == 1  # not started again
    argvs = invocations(tmp_path / "runs" / second.name)
    assert argvs[-1] == ["train", "--resume", str(tmp_path / "runs" / second.name)]
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs" / second.name / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 4]  # continued after the checkpoint (the last record is the final eval)


def test_parallel_runs_and_extra_benchmarks(tmp_path):
    spec = small_spec(eval={"benchmarks": ["arith", "math500"]})
    results = run(spec, tmp_path, parallel=2, threads=1)
    assert [r.state for r in results] == ["finished"] * 3
    for r in spec.runs():
        d = tmp_path / "runs" / r.name
        assert json.loads((d / "eval" / "math500" / "results.json").read_text())["bench"] == "math500"
        assert [a[0] for a in invocations(d)] == ["train"]


def test_a_different_spec_in_the_same_dir_is_refused(tmp_path):
    prepare_sweep_dir(small_spec(), tmp_path)
    prepare_sweep_dir(small_spec(description="same runs, new words"), tmp_path)  # fine
    with pytest.raises(SweepSpecError, match="different sweep"):
        prepare_sweep_dir(small_spec(seeds=2), tmp_path)


def test_stopping_a_trial_stops_its_process_and_it_resumes_later(tmp_path, monkeypatch):
    spec = small_spec(base={"overrides": {"train.steps": 50}})
    plan = spec.runs()[0]
    run_dir = tmp_path / "runs" / plan.name
    monkeypatch.setenv("STANDIN_SLEEP", "1.0")  # 50 steps: far longer than the 3 s before the stop
    stop = threading.Event()
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    t0 = time.time()
    res = run_trial(plan, run_dir, launcher=launcher(), stop=stop)
    assert res.state == "interrupted" and time.time() - t0 < 15
    assert read_status(run_dir).state == "interrupted"
    assert not (run_dir / "final").exists()
    monkeypatch.setenv("STANDIN_SLEEP", "0")
    res = run_trial(plan, run_dir, launcher=launcher())
    assert res.state == "finished" and res.resumed


def test_threads_are_divided_between_parallel_runs():
    assert threads_per_run(1, cpus=8) == 8
    assert threads_per_run(3, cpus=8) == 2
    assert threads_per_run(16, cpus=8) == 1
