"""`toolrl analyze`: the papers' behaviour analyses (code use, pass rates, timing, self-correction, purpose) of
training runs, evaluations and sweeps, as tables, analysis.json, PNG figures and one self-contained analysis.html."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from toolrl.cli.common import JsonOpt, err_console, info, print_json
from toolrl.errors import ToolrlError


def _decoder(series: Any) -> Callable[[list[int]], str] | None:
    """The run's tokenizer, for exact token positions; None (interpolated positions) when it cannot load."""
    try:
        from toolrl.config.schema import ModelConfig
        from toolrl.models import load_tokenizer, resolve_model_path

        tok = load_tokenizer(resolve_model_path(ModelConfig(path=series.model)))
    except Exception as e:  # noqa: BLE001 - interpolated positions are still useful
        info(f"[yellow]note:[/] tokenizer of {series.name} unavailable ({type(e).__name__}); "
             "token positions are interpolated within segments")
        return None
    return lambda ids: tok.decode(ids, skip_special_tokens=False)


def _notes(series_list: list[Any]) -> list[str]:
    notes = []
    for s in series_list:
        trajs = [r.traj for p in s.points for r in p.records]
        old = sum(1 for t in trajs if t.unexecuted_blocks is None)
        if old:
            notes.append(f"{s.name}: {old} of {len(trajs)} trajectories were saved before toolrl recorded unexecuted "
                         "code blocks, so code written (vs executed) shows '-'; re-run to record them")
        if not any(t.calls or t.unexecuted_blocks for t in trajs):
            notes.append(f"{s.name}: no response contains a code block, so code metrics show '-'; check "
                         "tool.max_calls > 0 and the prompt (`toolrl inspect rollout {0}`)".format(s.source))
    return notes


def _print_table(t: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    title, header, rows = t
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 or h in ("bench", "problem", "show it with") else "right")
    for r in rows:
        table.add_row(*r)
    console = err_console if err_console.is_terminal else Console(stderr=True, highlight=False, width=200)
    console.print(table)


def _default_out(paths: list[Path]) -> Path:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0] / "analysis"
    root = Path(os.environ.get("TOOLRL_RUNS_DIR", "runs"))
    return root / f"analysis-{time.strftime('%Y%m%d-%H%M%S')}"


def _llm_purposes(analysis: dict[str, Any], series_list: list[Any], model: Optional[str], limit: int) -> None:
    from toolrl.analysis.llm_labels import label_blocks
    from toolrl.config import load_config
    from toolrl.rollout import build_engine

    cfg = load_config(None, [f"model.path={json.dumps(model)}"] if model else [])
    with err_console.status("loading the labelling model ..."):
        engine = build_engine(cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console) as bar:
            for entry, s in zip(analysis["series"], series_list):
                codes = [c.code for p in s.points for r in p.records for c in r.traj.calls]
                codes += [b for p in s.points for r in p.records for b in r.traj.unexecuted_blocks or []]
                task = bar.add_task(f"labelling code purpose · {s.name}", total=min(limit, len(codes)))
                entry["llm_purposes"] = label_blocks(codes[:limit], engine,
                                                     progress=lambda k, t=task: bar.advance(t, k))
                entry["llm_purposes"]["model"] = model or "embedded SmolLM2-135M-Instruct"
    finally:
        engine.close()


def analyze_command(
    paths: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories: toolrl train (rollouts/step_*.jsonl), toolrl eval (rollouts.jsonl; several make "
             "curves over checkpoints and benchmarks side by side), toolrl sweep (one series per run).",
        show_default=False)] = None,
    compare: Annotated[Optional[tuple[Path, Path]], typer.Option(
        "--compare", metavar="A B", help="Two runs side by side (e.g. SFT vs zero-RL, C=1 vs C=2).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where analysis.json, the PNGs and analysis.html go (default: PATH/analysis).")] = None,
    tail: Annotated[int, typer.Option("--tail", min=1, help="Training runs: summarise the last N logged steps.")] = 5,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write the PNG figures and analysis.html.")] = True,
    tokenizer: Annotated[bool, typer.Option(
        "--tokenizer/--no-tokenizer", help="Load the run's tokenizer for exact token positions (else interpolated).")] = True,
    llm_labels: Annotated[bool, typer.Option(
        "--llm-labels", help="Also label code purpose with a language model (slow; the rule-based labels always run).")] = False,
    label_model: Annotated[Optional[str], typer.Option(
        "--label-model", help="Model for --llm-labels (default: the embedded SmolLM2-135M-Instruct).")] = None,
    label_limit: Annotated[int, typer.Option("--label-limit", min=1, help="Most code blocks labelled per series by --llm-labels.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Code written vs executed, pass rates, code lines, calls, invocation timing, self-correction and code purpose.

    PATHS: run directories of toolrl train (rollouts/step_*.jsonl), toolrl eval (rollouts.jsonl; several give
    benchmarks side by side with their average, and curves over checkpoints) or toolrl sweep (one series per run).
    Writes tables, analysis.json, one PNG per paper figure and analysis.html (see docs/analysis.md).
    """
    from toolrl.analysis.analyze import analyze
    from toolrl.analysis.sources import load_series
    from toolrl.analysis.tables import all_tables

    if compare and paths:
        raise ToolrlError("give either PATH... or --compare A B, not both", "e.g. toolrl analyze --compare runs/sft runs/zero")
    targets = list(compare) if compare else list(paths or [])
    if not targets:
        raise ToolrlError("no run directory given", "toolrl analyze runs/<run>   (or --compare A B)")
    with err_console.status("reading rollouts ..."):
        series_list, notes = load_series(targets, separate=bool(compare))
    notes += _notes(series_list)
    decoders: dict[str, Any] = {}

    def decode_for(s: Any) -> Any:
        key = str(s.model)
        if key not in decoders:
            decoders[key] = _decoder(s) if tokenizer else None
        return decoders[key]

    with err_console.status("computing metrics ..."):
        analysis = analyze(series_list, decode_for=decode_for, tail=tail)
    analysis["timing_positions"] = "exact (run tokenizer)" if any(decoders.values()) else "interpolated within segments"
    if llm_labels:
        _llm_purposes(analysis, series_list, label_model, label_limit)
    analysis["notes"] = notes
    tables = all_tables(analysis, compare=bool(compare))
    for t in tables:
        _print_table(t)
    for n in notes:
        err_console.print(f"[yellow]note:[/] {n}", soft_wrap=True)

    out_dir = out or _default_out(targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if figures:
        from toolrl.analysis.figures import write_figures
        from toolrl.analysis.page import write_page

        with err_console.status("drawing figures ..."):
            files = write_figures(analysis, out_dir)
            files.append(write_page(analysis, tables, files, out_dir / "analysis.html", notes))
    analysis["files"] = [str(f) for f in files]
    (out_dir / "analysis.json").write_text(json.dumps(analysis, indent=2, default=str) + "\n")
    info(f"wrote {out_dir / 'analysis.json'}" + (f", {len(files) - 1} figures and {out_dir / 'analysis.html'}"
                                                  if files else ""))
    if as_json:
        print_json(analysis)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
