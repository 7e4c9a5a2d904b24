"""Local runner: the sweep's runs one after another or N at a time, each through the trial function.

The sweep directory holds ``sweep.yaml`` (the normalised spec, so `summary` and a re-run know what was asked),
``status.json`` (one row per run) and ``runs/<name>/`` (one `toolrl train` run directory each). Re-running the
same command skips finished runs and resumes interrupted ones; a different spec in the same directory is refused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterator, Sequence

import yaml

from toolrl.errors import ToolrlError
from toolrl.sweep.spec import RunPlan, SweepSpec, SweepSpecError
from toolrl.sweep.status import (
    RUNS_DIR,
    SPEC_COPY,
    TABLE_FILE,
    RunStatus,
    read_status,
    status_table,
    write_json_atomic,
)
from toolrl.sweep.trial import TrialResult, run_trial

Trial = Callable[..., TrialResult]


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_run(parallel: int, cpus: int | None = None) -> int:
    """Divide the CPUs between the runs alive at once (at least one thread each)."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, parallel))


def run_dir_of(sweep_dir: Path, run: RunPlan) -> Path:
    return Path(sweep_dir) / RUNS_DIR / run.name


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path) -> None:
    """Create the sweep directory with its spec copy; refuse a directory that belongs to a different sweep."""
    sweep_dir = Path(sweep_dir)
    copy = sweep_dir / SPEC_COPY
    if copy.is_file():
        from toolrl.sweep.spec import parse_spec

        try:
            old = parse_spec(yaml.safe_load(copy.read_text()))
        except ToolrlError:
            old = None
        if old is None or old.fingerprint() != spec.fingerprint():
            raise SweepSpecError(
                f"{sweep_dir} holds a different sweep (its {SPEC_COPY} does not match this file)",
                "pass --out NEW_DIR, or delete the old directory to start over",
            )
    (sweep_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))


def steps_done(run_dir: Path) -> int:
    """RL steps recorded so far (distinct steps >= 1 with a training metric; evaluation and SFT rows at step 0
    do not count)."""
    from toolrl.tracking.store import read

    steps = set()
    for rec in read(run_dir):
        if int(rec.get("step", 0)) > 0 and any(not k.startswith("eval/") for k in rec if k not in ("step", "time")):
            steps.add(rec.get("step"))
    return len(steps)


def collect_statuses(sweep_dir: Path, runs: Sequence[RunPlan]) -> list[RunStatus]:
    out = []
    for run in runs:
        d = run_dir_of(sweep_dir, run)
        st = read_status(d) or RunStatus(name=run.name)
        st.steps_done = steps_done(d)
        out.append(st)
    return out


def write_table(sweep_dir: Path, runs: Sequence[RunPlan]) -> list[RunStatus]:
    statuses = collect_statuses(sweep_dir, runs)
    write_json_atomic(Path(sweep_dir) / TABLE_FILE, status_table(statuses))
    return statuses


def run_local(
    spec: SweepSpec,
    runs: Sequence[RunPlan],
    sweep_dir: Path,
    *,
    parallel: int = 1,
    threads: int | None = None,
    total_steps: dict[str, int] | None = None,
    launcher: Sequence[str] | None = None,
    trial: Trial = run_trial,
    show_progress: bool = True,
) -> list[TrialResult]:
    """Run every run of the sweep (finished ones are skipped by the trial) and return their results in order."""
    sweep_dir = Path(sweep_dir)
    prepare_sweep_dir(spec, sweep_dir)
    threads = threads or threads_per_run(parallel)
    stop = threading.Event()
    results: dict[str, TrialResult] = {}
    write_table(sweep_dir, runs)
    progress = _SweepProgress(sweep_dir, runs, total_steps or {}) if show_progress else None
    with _sigterm_interrupts(), ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="sweep") as pool:
        futures: dict[Future, RunPlan] = {
            pool.submit(trial, run, run_dir_of(sweep_dir, run), threads=threads, launcher=launcher, stop=stop): run
            for run in runs
        }
        pending = set(futures)
        last_table = time.time()
        try:
            if progress:
                progress.start()
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()
                    results[res.name] = res
                if done or time.time() - last_table > 15:  # status.json follows the runs while they train
                    write_table(sweep_dir, runs)
                    last_table = time.time()
                if progress:
                    progress.update(results)
        except KeyboardInterrupt:
            stop.set()  # trials stop their subprocesses (SIGINT, then SIGKILL) and record `interrupted`
            for fut in futures:
                fut.cancel()
            wait(list(futures))
            raise
        finally:
            if progress:
                progress.stop()
            write_table(sweep_dir, runs)
    return [results[r.name] for r in runs if r.name in results]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, a batch scheduler) stops the sweep like Ctrl-C: the runs are stopped, not orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if old_int is signal.SIG_IGN:
        # Started in the background by a shell, which ignores SIGINT; an ignored signal would also be
        # inherited by the runs, leaving them deaf to the SIGINT that asks them to stop cleanly.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


class _SweepProgress:
    """Rich view on stderr: one bar for the sweep, one per run that is training (steps from metrics.jsonl)."""

    def __init__(self, sweep_dir: Path, runs: Sequence[RunPlan], total_steps: dict[str, int]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from toolrl.cli.common import err_console

        self.sweep_dir, self.runs, self.total_steps = sweep_dir, runs, total_steps
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err_console,
                                 transient=False)
        self.overall = self.progress.add_task("[bold]sweep", total=len(runs), note="")
        self.tasks: dict[str, int] = {}
        self._last = 0.0

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def update(self, results: dict[str, TrialResult]) -> None:
        counts = {s: sum(1 for r in results.values() if r.state == s) for s in ("finished", "skipped", "failed")}
        note = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        self.progress.update(self.overall, completed=len(results), note=note)
        for name in [n for n in self.tasks if n in results]:  # a finished run's bar goes at once
            self.progress.remove_task(self.tasks.pop(name))
        if time.time() - self._last < 2.0:  # metrics files are re-read at most every 2 s
            return
        self._last = time.time()
        for run in self.runs:
            if run.name in results:
                continue
            st = read_status(run_dir_of(self.sweep_dir, run))
            if st is None or st.state != "running":
                continue
            if run.name not in self.tasks:
                self.tasks[run.name] = self.progress.add_task(f"  {run.name}", total=self.total_steps.get(run.name),
                                                              note="")
            done = steps_done(run_dir_of(self.sweep_dir, run))
            self.progress.update(self.tasks[run.name], completed=done, note=st.phase)


def result_counts(results: Sequence[TrialResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.state] = out.get(r.state, 0) + 1
    return out


