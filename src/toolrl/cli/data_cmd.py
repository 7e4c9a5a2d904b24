"""`toolrl data`: statistics, contamination checks, format conversion and ReTool's cold-start SFT construction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, err_console, info, out_console, print_json

data_app = typer.Typer(help="Inspect, check, convert and build data sets (parquet, JSONL, JSON, Hugging Face ids).",
                       no_args_is_help=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Config override key=value (repeatable), e.g. data.answer_key=reward_model.ground_truth.")]
SourceArg = Annotated[str, typer.Argument(help="A benchmark name, a .parquet/.jsonl/.json file, a save_to_disk directory or a Hugging Face id org/name[:config][@split].")]


def _cfg(config: list[str] | None, sets: list[str] | None, extra: list[str] | None = None) -> Any:
    from toolrl.config.loader import load_config

    return load_config(config or [], [*(sets or []), *(extra or [])])


def _bar(count: int, top: int, width: int = 30) -> str:
    return "█" * max(1 if count else 0, round(width * count / top)) if top else ""


def stats_command(
    source: SourceArg,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Tokenizer for prompt lengths (default: model.path, else the embedded model).")] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", help="Prompt token budget to count against (default: rollout.max_prompt_tokens).")] = None,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins.")] = 10,
    lengths: Annotated[bool, typer.Option("--lengths/--no-lengths", help="Measure prompt lengths with the tokenizer and prompt template.")] = True,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rows, sources, repeated rows, answer types and a prompt-length histogram of a data set."""
    from rich.table import Table

    from toolrl.data.stats import compute_stats
    from toolrl.eval.benchmarks import load_benchmark

    cfg = _cfg(config, sets, [f"model.path={json.dumps(model)}"] if model else None)
    pset = load_benchmark(source, cfg)
    token_counts = None
    if lengths:
        from toolrl.models import load_tokenizer, resolve_model_path
        from toolrl.rollout.prompts import encode_prompt

        with err_console.status("loading tokenizer ..."):
            tok = load_tokenizer(resolve_model_path(cfg.model), cfg.model.trust_remote_code)
        from rich.progress import track

        token_counts = [len(encode_prompt(p, cfg, tok)[1])
                        for p in track(pset.problems, description="tokenizing prompts", console=err_console, transient=True)]
    st = compute_stats(pset, token_counts, budget or cfg.rollout.max_prompt_tokens, bins)
    if json_out:
        print_json(st.to_dict())
        return
    table = Table(title=f"{st.name}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("rows", str(st.rows))
    table.add_row("unique problems", f"{st.unique}" + (f"  ({st.duplicate_rows} repeated rows merged)" if st.duplicate_rows else ""))
    for line in st.repeats:
        table.add_row("repeats", line)
    if st.sources:
        table.add_row("sources", ", ".join(f"{k} {v}" for k, v in st.sources.items()))
    cols = dict(st.columns)
    if not cols.get("problem") and cols.get("messages"):
        cols["problem"] = f"last user turn of {cols['messages']}"
    table.add_row("columns", ", ".join(f"{k}={v}" for k, v in cols.items() if v))
    table.add_row("answer types", ", ".join(f"{k} {v}" for k, v in st.answer_types.items()))
    if st.lengths:
        L = st.lengths
        table.add_row("prompt tokens", f"min {L['min']} · median {L['median']:g} · p90 {L['p90']} · max {L['max']}")
        table.add_row("over budget", f"{L['over_budget']} of {st.unique} prompts exceed {L['budget']} tokens")
    out_console.print(table)
    if st.histogram:
        hist = Table(title="prompt length (tokens, prompt template included)", title_justify="left")
        for col in ("tokens", "prompts", ""):
            hist.add_column(col, justify="right" if col == "prompts" else "left")
        top = max(c for _, _, c in st.histogram)
        for lo, hi, c in st.histogram:
            over = st.lengths is not None and lo > st.lengths["budget"]
            hist.add_row(f"{lo}-{hi}", str(c), _bar(c, top), style="red" if over else None)
        out_console.print(hist)


def overlap_command(
    train: Annotated[str, typer.Argument(help="Training set: train, arith, a benchmark name, a file or a Hub id.")],
    evals: Annotated[list[str], typer.Argument(help="Benchmarks to check (names, files or Hub ids).")],
    n: Annotated[int, typer.Option("--n", help="Words per shingle (13 is the usual contamination window).")] = 13,
    min_share: Annotated[float, typer.Option("--min-share", help="List only pairs sharing at least this share of the benchmark problem's shingles.")] = 0.0,
    show: Annotated[int, typer.Option("--show", help="Most overlapping pairs listed per benchmark.")] = 20,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """n-gram contamination check between a training set and benchmarks, listing the overlapping problems."""
    from rich.table import Table

    from toolrl.data.overlap import find_overlaps
    from toolrl.eval.benchmarks import load_benchmark, load_train_problems

    if n < 1:
        from toolrl.errors import ToolrlError

        raise ToolrlError(f"--n must be >= 1, got {n}", "13 is the usual window")
    cfg = _cfg(config, sets, [f"data.train={json.dumps(train)}"])
    with err_console.status("loading data ..."):
        train_problems = load_train_problems(cfg)
    results: dict[str, Any] = {"train": train, "train_problems": len(train_problems), "n": n, "benches": {}}
    for name in evals:
        problems = load_benchmark(name, cfg).problems
        with err_console.status(f"comparing {name} ..."):
            found = find_overlaps(train_problems, problems, n, min_share)
        hit_ids = {o.eval_id for o in found}
        exact_ids = {o.eval_id for o in found if o.exact}
        results["benches"][name] = {"problems": len(problems), "overlapping": len(hit_ids), "exact": len(exact_ids),
                                    "pairs": [o.to_dict() for o in found]}
        if json_out:
            continue
        table = Table(title=f"{name}: {len(hit_ids)} of {len(problems)} problems share a {n}-gram with {train} "
                            f"({len(exact_ids)} identical)", title_justify="left")
        for col in ("benchmark id", "train id", "shared", "share", "identical"):
            table.add_column(col, justify="right" if col in ("shared", "share") else "left")
        for o in found[:show]:
            table.add_row(o.eval_id, o.train_id, str(o.shared), f"{o.share:.0%}", "yes" if o.exact else "",
                          style="bold red" if o.exact else None)
        if len(found) > show:
            table.caption = f"{len(found) - show} more pairs (--show N, or --json for all)"
        out_console.print(table)
    if json_out:
        print_json(results)


def build_sft_command(
    source: Annotated[str, typer.Argument(help="Rows with a problem, a text solution and an answer (any readable format).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="SFT JSONL to write (appended to; done ids are skipped).")],
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint of the teacher, e.g. http://localhost:8000/v1 (vllm serve, SGLang). Empty = the in-process engine (rollout.backend) with model.path.")] = None,
    teacher_model: Annotated[Optional[str], typer.Option("--teacher-model", help="Model name at the endpoint (default: the first it serves).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Endpoint key (default: $OPENAI_API_KEY, else none).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="In-process teacher model (sets model.path).")] = None,
    template: Annotated[Optional[Path], typer.Option("--template", help="Rewrite prompt file with {problem}, {solution} and {answer} (default: the built-in one for tool.format).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Rows in flight at once.")] = 4,
    require_success: Annotated[bool, typer.Option("--require-success", help="Drop traces in which any code block failed (error, timeout).")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Teacher sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Teacher tokens per rewrite.")] = 4096,
    limit: Annotated[Optional[int], typer.Option("--limit", "-l", help="Use only the first N rows.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """ReTool cold start: a teacher rewrites text solutions into code-integrated ones; code runs in the sandbox,
    real outputs replace the teacher's, and traces are kept only with the right format and answer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from toolrl.data.build_sft import BuildOptions, SFTBuilder, load_template, solution_column
    from toolrl.data.columns import get_field
    from toolrl.data.readers import load_problem_set
    from toolrl.errors import ToolrlError

    if concurrency < 1:
        raise ToolrlError(f"--concurrency must be >= 1, got {concurrency}", "e.g. --concurrency 8")
    if not out.name.endswith(".jsonl"):
        raise ToolrlError(f"--out must be a .jsonl file, got '{out}'", "e.g. -o cold_start.jsonl")
    cfg = _cfg(config, sets, [f"model.path={json.dumps(model)}"] if model else None)
    prompt = load_template(template, cfg.tool.format)
    pset = load_problem_set(source, cfg.data, default_split="train")
    col = solution_column(pset.columns)
    rows = []
    for p in pset.problems:
        sol = p.meta.get(col) if col in p.meta else get_field(p.meta, col)
        if sol:
            rows.append((p, str(sol)))
    if not rows:
        raise ToolrlError(f"no row of {source} has a text solution in '{col}'", "set data.solution_key=COLUMN")
    missing = len(pset.problems) - len(rows)
    rows = rows[:limit] if limit else rows
    if missing:
        info(f"[yellow]{missing} rows have no text solution in '{col}' and are not used[/]")

    from toolrl.sandbox import build_sandbox

    with err_console.status("starting teacher and sandbox ..."):
        if base_url:
            from toolrl.data.teachers import OpenAITeacher

            teacher: Any = OpenAITeacher(base_url, teacher_model, api_key, temperature=temperature, max_tokens=max_tokens)
        else:
            from toolrl.data.teachers import EngineTeacher

            teacher = EngineTeacher(cfg, temperature=temperature, max_tokens=max_tokens)
        try:
            sandbox = build_sandbox(cfg)
        except BaseException:
            teacher.close()
            raise
    builder = SFTBuilder(cfg, teacher, sandbox, prompt, out, BuildOptions(concurrency=concurrency, require_success=require_success))
    info(f"teacher: {teacher.name} · sandbox: {cfg.sandbox.backend} · tool format: {cfg.tool.format}")
    tally: dict[str, int] = {}
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=err_console) as bar:
            task = bar.add_task("build-sft", total=len(rows))

            def on_start(todo: int, done: int) -> None:
                bar.update(task, total=todo, description=f"build-sft · {done} rows already done" if done else "build-sft")

            def on_outcome(o: Any) -> None:
                key = o.reason or "kept"
                tally[key] = tally.get(key, 0) + 1
                dropped = sum(v for k, v in tally.items() if k != "kept")
                bar.update(task, advance=1, description=f"build-sft · kept {tally.get('kept', 0)} · dropped {dropped}")

            report = builder.run(rows, on_outcome, on_start)
    finally:
        teacher.close()
        sandbox.close()
    _print_report(report)
    if json_out:
        print_json(report.to_dict())


def _print_report(report: Any) -> None:
    from rich.table import Table

    table = Table(title=f"build-sft → {report.out}", title_justify="left")
    for col in ("", "this run", "whole file"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("input rows", str(report.input_rows), "")
    table.add_row("already done (skipped)", str(report.skipped_done), "")
    table.add_row("kept", str(report.run.get("kept", 0)), str(report.total_kept), style="bold green")
    reasons = sorted(set(report.total_dropped) | {k for k in report.run if k != "kept"})
    for r in reasons:
        retry = r in report.retry
        table.add_row(f"dropped: {r}" if not retry else f"failed: {r} (retried next run)", str(report.run.get(r, 0)),
                      "" if retry else str(report.total_dropped.get(r, 0)), style="yellow" if retry else None)
    table.add_row("teacher outputs replaced by real ones", str(report.replaced_outputs), "")
    err_console.print(table)
    if report.retry:
        info(f"[yellow]{sum(report.retry.values())} rows failed for infrastructure reasons; run the same command "
             "again to retry them (done rows are skipped)[/]")


def convert_command(
    source: SourceArg,
    dest: Annotated[Path, typer.Argument(help="Output: .parquet (verl layout) or .jsonl (toolrl's).")],
    data_source: Annotated[Optional[str], typer.Option("--source", help="data_source written to parquet rows that have none (default: the input's name).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Convert between toolrl's JSONL and verl parquet (problems), or copy SFT rows between the two formats."""
    from toolrl.data.convert import convert

    cfg = _cfg(config, sets)
    n, kind = convert(source, dest, cfg, data_source)
    info(f"wrote {n} {'SFT rows' if kind == 'sft' else 'problems'} to {dest}")


data_app.command("stats")(stats_command)
data_app.command("overlap")(overlap_command)
data_app.command("build-sft")(build_sft_command)
data_app.command("convert")(convert_command)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


__all__ = ["register", "data_app"]
