"""The trial function: run one sweep run to completion, resuming what an earlier attempt left.

The local runner and the W&B agent both call :func:`run_trial`, so a run behaves the same wherever it starts.
Each phase is a subprocess (``toolrl train``, then ``toolrl eval`` for benchmarks beyond the first): a crash or an
out-of-memory kill of one run cannot take the sweep down, and the thread count of each run is set by
``OMP_NUM_THREADS`` before torch starts. ``TOOLRL_SWEEP_LAUNCHER`` replaces ``python -m toolrl.cli.main``
(e.g. with ``srun python -m toolrl.cli.main`` on a cluster).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from toolrl.sweep.spec import RunPlan
from toolrl.sweep.status import (
    LOG_FILE,
    STATUS_FILE,
    RunStatus,
    can_resume,
    log_tail,
    read_status,
    train_finished,
    write_status,
)

LAUNCHER_ENV = "TOOLRL_SWEEP_LAUNCHER"
ATTEMPTS_DIR = "attempts"
_OURS = {STATUS_FILE, LOG_FILE}


@dataclass(frozen=True)
class TrialResult:
    name: str
    state: str  # finished | failed | skipped | interrupted
    returncode: int | None = None
    resumed: bool = False
    error: str = ""
    duration_s: float = 0.0


def default_launcher() -> list[str]:
    env = os.environ.get(LAUNCHER_ENV, "").strip()
    return shlex.split(env) if env else [sys.executable, "-m", "toolrl.cli.main"]


def train_argv(run: RunPlan, run_dir: Path, resume: bool, extra_overrides: Sequence[str] = ()) -> list[str]:
    """`toolrl train` arguments; a resumed run takes everything from its saved config.yaml."""
    if resume:
        return ["train", "--resume", str(run_dir)]
    argv = ["train", "--out", str(run_dir)]
    for f in run.config_files:
        argv += ["--config", f]
    return argv + list(run.overrides) + list(extra_overrides)


def eval_argv(run_dir: Path, bench: str) -> list[str]:
    """`toolrl eval` of the final model on one more benchmark, with the run's own (tool, eval) settings."""
    return ["eval", "--config", str(run_dir / "config.yaml"), "--model", str(run_dir / "final"),
            "--bench", bench, "--out", str(eval_dir(run_dir, bench))]


def eval_dir(run_dir: Path, bench: str) -> Path:
    from toolrl.sweep.spec import sanitize

    return Path(run_dir) / "eval" / sanitize(bench)


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Every intra-op pool a run may start gets the same share of the CPU.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(max(1, threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _set_aside(run_dir: Path) -> None:
    """A run that failed before its first checkpoint restarts clean; its files are kept under attempts/."""
    leftovers = [p for p in run_dir.iterdir() if p.name not in _OURS] if run_dir.is_dir() else []
    if not leftovers:
        return
    dest_root = run_dir.parent.parent / ATTEMPTS_DIR
    k = 1
    while (dest_root / f"{run_dir.name}.{k}").exists():
        k += 1
    dest = dest_root / f"{run_dir.name}.{k}"
    dest.mkdir(parents=True)
    for p in leftovers:
        shutil.move(str(p), str(dest / p.name))


def _run_phase(argv: list[str], run_dir: Path, env: dict[str, str], stop: threading.Event | None) -> int:
    """Run one subprocess with its output appended to the run's log; stop it (whole group) when asked."""
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"\n$ {shlex.join(argv)}\n".encode())
        log.flush()
        # Own process group: stopping it stops its children, and a Ctrl-C in the terminal reaches only the sweep,
        # which then stops each run in order (see _terminate).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if stop is not None and stop.is_set():
                _terminate(proc)
                return proc.wait()


def exit_reason(phase: str, code: int) -> str:
    """One line on why a phase ended badly; a killed process writes nothing of its own into the log."""
    if code >= 0:
        return f"{phase} exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        return (f"{phase} was killed by {name}, most often the kernel's out-of-memory killer (see `dmesg`): run fewer "
                "runs at once (--parallel) or make them smaller; running the sweep again resumes it")
    return f"{phase} was killed by {name}; running the sweep again resumes it"


def _terminate(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGINT first (the trainer checkpoints and exits cleanly), SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_trial(
    run: RunPlan,
    run_dir: Path,
    *,
    threads: int = 1,
    launcher: Sequence[str] | None = None,
    extra_overrides: Sequence[str] = (),
    stop: threading.Event | None = None,
) -> TrialResult:
    """Bring one run to `finished`: skip it when done, resume it from its checkpoint, else start it.

    Never raises because the run failed: the failure is recorded in ``run_dir/sweep_status.json`` (with the
    tail of its log) and returned, so the caller moves on to the next run.
    """
    run_dir = Path(run_dir)
    launcher = list(launcher) if launcher is not None else default_launcher()
    previous = read_status(run_dir)
    if previous is not None and previous.state == "finished":
        return TrialResult(run.name, "skipped", previous.returncode)
    status = RunStatus(name=run.name, state="running", attempts=(previous.attempts if previous else 0) + 1,
                       started=time.time())
    env = child_env(threads)
    t0 = time.time()
    phases: list[tuple[str, list[str]]] = []
    if not train_finished(run_dir):
        status.resumed = can_resume(run_dir)
        if not status.resumed:
            _set_aside(run_dir)
        phases.append(("train", launcher + train_argv(run, run_dir, status.resumed, extra_overrides)))
    for bench in run.extra_benchmarks:
        if not (eval_dir(run_dir, bench) / "results.json").is_file():
            phases.append((f"eval:{bench}", launcher + eval_argv(run_dir, bench)))
    run_dir.mkdir(parents=True, exist_ok=True)
    for phase, argv in phases:
        status.phase = phase
        write_status(run_dir, status)
        code = _run_phase(argv, run_dir, env, stop)
        if stop is not None and stop.is_set():
            status.state, status.returncode, status.ended = "interrupted", code, time.time()
            write_status(run_dir, status)
            return TrialResult(run.name, "interrupted", code, status.resumed, "", time.time() - t0)
        if code != 0:
            status.state, status.returncode, status.ended = "failed", code, time.time()
            status.error = "\n".join(p for p in (log_tail(run_dir), exit_reason(phase, code)) if p)
            write_status(run_dir, status)
            return TrialResult(run.name, "failed", code, status.resumed, status.error, time.time() - t0)
    status.state, status.returncode, status.ended, status.phase = "finished", 0, time.time(), ""
    write_status(run_dir, status)
    return TrialResult(run.name, "finished", 0, status.resumed, "", time.time() - t0)
