"""`toolrl train`: RL (optionally after cold-start SFT), SFT only, or distillation, with a live view on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, OverridesArg, RunDirOpt, err_console, info, new_run_dir, print_json
from toolrl.errors import ConfigError

ResumeOpt = Annotated[
    Optional[Path],
    typer.Option("--resume", "-r", help="Continue the run in this directory from its latest checkpoint "
                 "(its config.yaml is used; key=value overrides still apply, e.g. train.steps=40)."),
]
DEFAULT_CONFIG = "default"  # configs/default.yaml: the short CPU run `toolrl train` does with no arguments


class LiveView:
    """Rich progress on stderr: one bar for steps (reward, accuracy, code share, time per step), one for the
    rollouts of the current step, moving with tokens and calls (tokens/s, calls/s). Only rank 0 shows it."""

    def __init__(self, per_step: int, budget: int) -> None:
        from rich.progress import Progress

        from toolrl.cli.rollout_bar import RolloutBar, rollout_columns

        self.progress = Progress(*rollout_columns(), console=err_console, transient=False)
        self.per_step, self.budget = per_step, budget
        self.steps_task: Any = None
        self.total_steps = 0
        self.roll = RolloutBar.add(self.progress, "[dim]starting[/]", per_step, budget, self._describe)
        self.roll_task = self.roll.task
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.step_times: list[float] = []
        self.done = 0
        self.correct = 0

    def __enter__(self) -> "LiveView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def phase(self, text: str) -> None:
        self.progress.update(self.roll_task, description=f"[dim]{text}[/]")

    def header(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}[/]")

    def start(self, first_step: int, total_steps: int) -> None:
        self.total_steps = total_steps
        self.steps_task = self.progress.add_task("steps", total=total_steps, completed=first_step - 1,
                                                 samples=f"{first_step - 1}/{total_steps} steps", rates="")
        self._reset_rollouts()

    def _reset_rollouts(self) -> None:
        self.done = self.correct = 0
        self.roll.reset(self.per_step, self.budget)
        self.progress.update(self.roll_task, description="rollouts")

    def _describe(self, traj: Any) -> str:
        with self.lock:
            self.done += 1
            self.correct += bool(traj.correct)
            return f"rollouts · acc so far {self.correct / self.done:.0%}"

    # Rollout progress events (toolrl.rollout.progress.RolloutEvents)
    def on_tokens(self, n: int) -> None:
        self.roll.on_tokens(n)

    def on_call(self) -> None:
        self.roll.on_call()

    def on_trajectory(self, traj: Any) -> None:
        self.roll.on_trajectory(traj)

    trajectory = on_trajectory

    def step(self, step: int, metrics: dict[str, float]) -> None:
        if step <= 0:  # SFT steps
            loss = metrics.get("sft/loss")
            self.progress.update(self.roll_task, description=f"SFT step {-step} · loss {loss:.3f}" if loss is not None else "SFT")
            return
        self.last = metrics
        if "time/step_s" in metrics:
            self.step_times.append(metrics["time/step_s"])
        if self.steps_task is None:
            return

        def f(key: str, fmt: str) -> str:
            v = metrics.get(key)
            return format(v, fmt) if isinstance(v, (int, float)) else "-"

        desc = (f"step {step} · reward {f('reward/mean', '+.2f')} · acc {f('acc', '.0%')} · "
                f"code {f('code/share', '.0%')} · {f('time/step_s', '.0f')}s/step")
        self.progress.update(self.steps_task, completed=step, description=desc,
                             samples=f"{step}/{self.total_steps} steps")
        self._reset_rollouts()


class _Quiet:
    """Hooks for ranks other than 0."""

    def phase(self, text: str) -> None: ...

    def header(self, text: str) -> None: ...

    def start(self, first_step: int, total_steps: int) -> None: ...

    def trajectory(self, traj: Any) -> None: ...

    def on_tokens(self, n: int) -> None: ...

    def on_call(self) -> None: ...

    def on_trajectory(self, traj: Any) -> None: ...

    def step(self, step: int, metrics: dict[str, float]) -> None: ...


def load_train_config(config: list[str] | None, resume: Path | None, overrides: list[str]) -> Any:
    from toolrl.config.loader import load_config

    if resume is not None:
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"'{resume}' is not a training run directory (no config.yaml)",
                              "pass the directory `toolrl train` printed, e.g. --resume runs/train-<time>")
        return load_config([saved, *(config or [])], overrides)
    return load_config(config if config else [DEFAULT_CONFIG], overrides)


def train_command(
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    out: RunDirOpt = None,
    json_out: JsonOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Train with tool-integrated RL (GRPO / PPO / RLOO through DeepSpeed); with no arguments, a short CPU run of
    the embedded model on the built-in arithmetic task (configs/default.yaml)."""
    from toolrl.config.loader import save_config
    from toolrl.train.runner import check

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cfg = load_train_config(config, resume, list(overrides or []))
    check(cfg, world)  # every training-specific rule, before any model loads
    from toolrl.placement.fit import check_before_launch

    check_before_launch(cfg, world)  # GPUs only: the memory plan of `toolrl plan` must fit
    if resume is not None:
        run_dir = resume
    else:
        if world > 1 and out is None and cfg.run.dir is None:
            raise ConfigError("a multi-process run needs --out DIR", "every rank must write to the same run directory")
        run_dir = new_run_dir("train", out if out is not None else cfg.run.dir, cfg.run.name) if rank == 0 else Path(out or cfg.run.dir)  # type: ignore[arg-type]
        if rank == 0:
            if (run_dir / "checkpoints" / "latest").exists():
                raise ConfigError(f"{run_dir} already holds a training run", f"continue it with --resume {run_dir}, or pick another --out")
            save_config(cfg, run_dir / "config.yaml")
    if rank == 0:
        what = {"rl": f"{cfg.algo.name.upper()} for {cfg.train.steps} steps", "sft": "SFT only",
                "distill": "distillation by rejection sampling"}[cfg.train.stage]
        sft = " after cold-start SFT" if cfg.sft.enabled and cfg.train.stage == "rl" else ""
        info(f"[bold]toolrl train[/]: {what}{sft} · run dir [cyan]{run_dir}[/]" + (" (resuming)" if resume else ""))

    from transformers.utils import logging as hf_logging

    from toolrl.train import train

    hf_logging.disable_progress_bar()  # the live view is the progress display; no tqdm bars through it
    start = time.perf_counter()
    # stdout carries only data (--json); DeepSpeed and friends print build notes and warnings to stdout, so
    # everything printed while training goes to stderr (deepspeed is first imported inside, so its logger too).
    with contextlib.redirect_stdout(sys.stderr):
        if rank != 0:
            train(cfg, run_dir, resume=resume is not None, hooks=_Quiet())
            return
        view = LiveView(cfg.train.prompts_per_step * cfg.algo.n_samples, cfg.rollout.max_new_tokens)
        with view:
            final = train(cfg, run_dir, resume=resume is not None, hooks=view)
    last = view.last
    elapsed = time.perf_counter() - start
    info(f"done in {elapsed / 60:.1f} min · run dir: {run_dir}")
    if cfg.train.stage == "distill":
        info(f"SFT data: {final}  (use it with sft.enabled=true sft.data={final})")
    else:
        info(f"final model: {final}  (evaluate: toolrl eval --model {final} --bench arith; "
             f"rollouts: toolrl inspect rollout {run_dir} --step N; metrics: {run_dir}/metrics.jsonl)")
        from toolrl.train.disk import kept_summary

        err_console.print(kept_summary(Path(run_dir)), soft_wrap=True)  # one line, for logs and scripts
    if json_out:
        print_json({"run_dir": str(run_dir), "final": str(final), "elapsed_s": elapsed, "last_metrics": last})


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=False)(train_command)


__all__ = ["register", "train_command", "load_train_config"]
