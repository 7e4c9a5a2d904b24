"""`toolrl sweep`: run an ablation sweep locally or through W&B, summarise it, or serve as a W&B agent.

`toolrl sweep SPEC.yaml ...` is short for `toolrl sweep run SPEC.yaml ...`: the group routes any first argument
that is not a subcommand name to `run`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from toolrl.cli.common import JsonOpt, err_console, print_json
from toolrl.errors import ToolrlError


class _RunByDefault(TyperGroup):
    """A group whose unknown first argument (a sweep file, or an option of `run`) is handed to `run`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Ablation sweeps: `toolrl sweep SPEC.yaml` runs one; `summary` tabulates and plots; `agent` serves W&B.",
)

ParallelOpt = Annotated[int, typer.Option("--parallel", "-p", min=1, help="Runs trained at once (CPU threads are divided).")]
ThreadsOpt = Annotated[
    Optional[int], typer.Option("--threads", min=1, help="Threads per run (default: CPUs / --parallel).")
]
TailOpt = Annotated[int, typer.Option("--tail", min=1, help="Training metrics: mean of the last N logged steps.")]


def default_sweep_dir(name: str) -> Path:
    """Deterministic (no timestamp), so re-running the same command finds and resumes the sweep."""
    return Path(os.environ.get("TOOLRL_RUNS_DIR", "runs")) / "sweeps" / name


def _print_runs(runs: list[Any], sweep_dir: Path, axes: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(runs)} runs", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("run")
    for a in axes:
        table.add_column(a.label)
    table.add_column("seed", justify="right")
    from toolrl.sweep.spec import format_label

    for i, r in enumerate(runs, 1):
        table.add_row(str(i), r.name, *[format_label(r.values.get(a.key)) for a in axes], str(r.seed))
    err_console.print(table)
    err_console.print(f"run directories: {sweep_dir}/runs/<run>")


def print_summary(sweep_dir: Path, *, as_json: bool, tail: int = 5, include_unfinished: bool = False,
                  plots: bool = True) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from toolrl.sweep.report import table_rows, write_report
    from toolrl.sweep.summary import load_runs, summarize, to_json

    spec, runs = load_runs(sweep_dir)
    points = summarize(runs, tail=tail, include_unfinished=include_unfinished)
    data = write_report(spec, runs, points, sweep_dir, tail) if plots else to_json(spec, points, tail)
    header, rows = table_rows(spec, points)
    table = Table(title=f"sweep {spec.name}: mean ± std over seeds", title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < len(spec.axes) else "right", no_wrap=True)
    for r in rows:
        table.add_row(*r)
    # A log file or pipe gets the whole table rather than one squeezed to 80 columns.
    console = err_console if err_console.is_terminal else Console(stderr=True, highlight=False, width=240)
    console.print(table)
    if plots:
        err_console.print(f"plots and page: {Path(sweep_dir) / 'index.html'}")
    if as_json:
        print_json(data)
    return data


@sweep_app.command("run")
def run_cmd(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Sweep file, e.g. sweeps/max_calls.yaml.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and list the runs; start nothing.")] = False,
    parallel: ParallelOpt = 1,
    threads: ThreadsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Sweep directory (default: runs/sweeps/<name>).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="local = run here; wandb = create a W&B sweep.",
                                         click_type=click.Choice(["local", "wandb"]))] = "local",
    tail: TailOpt = 5,
    as_json: JsonOpt = False,
) -> None:
    """Validate every run of a sweep file, then run them (skipping finished runs, resuming interrupted ones)."""
    from toolrl.sweep.spec import load_spec, validate_runs

    spec = load_spec(spec_file)
    checked = validate_runs(spec)  # every key and value of every run, before anything starts
    runs = [r for r, _ in checked]
    axes = [a for a in spec.axes if a.key != "run.seed"]
    sweep_dir = out or default_sweep_dir(spec.name)
    err_console.print(f"sweep [bold]{spec.name}[/]: {len(runs)} runs "
                      f"({spec.combine} over {', '.join(a.label for a in axes) or 'no axis'}; "
                      f"seeds {list(spec.seed_values())})")
    if dry_run:
        _print_runs(runs, sweep_dir, axes)
        if as_json:
            print_json([{"name": r.name, "point": r.point, "values": r.values, "seed": r.seed,
                         "overrides": list(r.overrides), "run_dir": str(sweep_dir / "runs" / r.name)} for r in runs])
        return
    if backend == "wandb":
        from toolrl.sweep.wandb_sweep import create_sweep

        tracking = checked[0][1].tracking
        sweep_id = create_sweep(spec, project=tracking.project, entity=tracking.entity)
        err_console.print(f"W&B sweep created: {sweep_id}\nstart agents (any machine): toolrl sweep agent {sweep_id}")
        if as_json:
            print_json({"sweep_id": sweep_id, "runs": len(runs)})
        return

    from toolrl.sweep.local import result_counts, run_local, threads_per_run

    threads = threads or threads_per_run(parallel)
    err_console.print(f"sweep directory: {sweep_dir}  ({parallel} at a time, {threads} thread(s) each)")
    try:
        results = run_local(spec, runs, sweep_dir, parallel=parallel, threads=threads,
                            total_steps={r.name: cfg.train.steps for r, cfg in checked})
    except KeyboardInterrupt:
        raise ToolrlError("sweep interrupted", "re-run the same command: finished runs are skipped and "
                          "interrupted ones resume from their checkpoints") from None
    counts = result_counts(results)
    err_console.print("runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print_summary(sweep_dir, as_json=as_json, tail=tail)
    failed = [r for r in results if r.state == "failed"]
    if failed:
        last = failed[0].error.splitlines()[-1] if failed[0].error else ""
        raise ToolrlError(f"{len(failed)} of {len(results)} runs failed (first: {failed[0].name}: {last})",
                          f"see {sweep_dir}/runs/<run>/sweep.log; re-running the same command retries them")


@sweep_app.command("summary")
def summary_cmd(
    sweep_dir: Annotated[Path, typer.Argument(metavar="SWEEP_DIR", help="Directory `toolrl sweep` wrote.")],
    tail: TailOpt = 5,
    include_unfinished: Annotated[bool, typer.Option("--all", help="Count unfinished runs too.")] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG files and index.html.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Table per axis point (accuracy per benchmark, code use, time per step) plus plots and index.html."""
    print_summary(sweep_dir, as_json=as_json, tail=tail, include_unfinished=include_unfinished, plots=not no_plots)


@sweep_app.command("agent")
def agent_cmd(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", help="entity/project/id that `--backend wandb` printed.")],
    spec_file: Annotated[Optional[Path], typer.Option("--spec", help="Sweep file (default: the copy stored in the W&B sweep).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Sweep directory on this machine.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", min=1, help="Stop after this many trials.")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Run trials of a W&B sweep on this machine (W&B hands out the grid points)."""
    from toolrl.sweep.local import threads_per_run
    from toolrl.sweep.spec import load_spec
    from toolrl.sweep.wandb_sweep import require_wandb, run_agent

    require_wandb()
    spec = load_spec(spec_file) if spec_file else None
    name = spec.name if spec else sweep_id.rsplit("/", 1)[-1]
    sweep_dir = out or default_sweep_dir(name)
    run_agent(sweep_id, sweep_dir, spec=spec, count=count, threads=threads or threads_per_run(1))


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
