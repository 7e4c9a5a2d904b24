"""`toolrl eval`: roll out a model on a benchmark with code execution, grade it, save results and rollouts."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, OverridesArg, RunDirOpt, err_console, info, new_run_dir, print_json

BenchOpt = Annotated[Optional[str], typer.Option("--bench", "-b", help="Benchmark name (aime24, aime25, math500, amc23, olympiadbench, gsm8k, arith), a .parquet/.jsonl/.json path (verl parquet is scored per data_source) or a Hugging Face id org/name[:config][@split]. Sets eval.bench.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hugging Face model id or local directory. Sets model.path (default: the embedded SmolLM2-135M-Instruct).")]
NOpt = Annotated[Optional[int], typer.Option("--n", help="Samples per problem: 1 = greedy pass@1; k > 1 = sampled avg@k, pass@k, maj@k. Sets eval.n.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", "-l", help="Evaluate only the first N problems. Sets eval.limit.")]
CompareOpt = Annotated[bool, typer.Option("--compare", help="Also show the papers' published numbers for this benchmark.")]


def _shortcuts(bench: str | None, model: str | None, n: int | None, limit: int | None) -> list[str]:
    out = []
    for key, value in (("eval.bench", bench), ("model.path", model), ("eval.n", n), ("eval.limit", limit)):
        if value is not None:
            out.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")  # quoted: paths stay strings
    return out


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "acc" or key.startswith(("pass@", "avg@", "maj@")) or key.endswith(("share", "success_rate")):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def results_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    m = results["metrics"]
    table = Table(title=f"{results['bench']} · {results['protocol']} · {results['model']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    acc_keys = [k for k in m if k.startswith(("pass@", "avg@", "maj@"))]
    rest = [k for k in m if k not in acc_keys and k != "acc"]
    for k in acc_keys + rest:
        table.add_row(k, _fmt(k, m[k]), style="bold" if k in acc_keys else None)
    return table


def by_source(trajs: list[Any]) -> dict[str, dict[str, Any]]:
    """Metrics per data_source, when the problems name more than one."""
    from toolrl.eval.metrics import compute_metrics

    groups: dict[str, list[Any]] = {}
    for t in trajs:
        groups.setdefault(str(t.problem.meta.get("data_source", "")), []).append(t)
    if len(groups) < 2 or "" in groups:
        return {}
    return {src: compute_metrics(ts) for src, ts in groups.items()}


def source_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    main_key = "pass@1" if results["n"] == 1 else f"avg@{results['n']}"
    table = Table(title=f"{results['bench']} per data_source", title_justify="left")
    for col in ("data_source", "problems", main_key, "code/share"):
        table.add_column(col, justify="left" if col == "data_source" else "right")
    for src, m in results["by_source"].items():
        table.add_row(src, str(m["num_problems"]), _fmt(main_key, m.get(main_key)), _fmt("code/share", m.get("code/share")))
    return table


def compare_table(bench: str, results: dict[str, Any]) -> Any:
    from rich.table import Table

    from toolrl.eval.published import published_for

    table = Table(title=f"published {bench} scores (percent)", title_justify="left")
    for col in ("model", "protocol", "score"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for model, proto, value in published_for(bench):
        table.add_row(model, proto, f"{value:.1f}")
    main_key = "pass@1" if results["n"] == 1 else f"avg@{results['n']}"
    table.add_row("this run", results["protocol"], _fmt(main_key, results["metrics"].get(main_key)).rstrip("%"), style="bold")
    return table


def eval_command(
    bench: BenchOpt = None,
    model: ModelOpt = None,
    n: NOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    out: RunDirOpt = None,
    json_out: JsonOpt = False,
    compare: CompareOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Evaluate a model with code execution: greedy pass@1 by default, avg@k / pass@k / maj@k with --n k."""
    from rich.progress import Progress

    from toolrl.cli.rollout_bar import RolloutBar, rollout_columns

    from toolrl.config.loader import config_to_dict, load_config, save_config
    from toolrl.eval import eval_protocol, evaluate
    from toolrl.eval.benchmarks import BENCHMARKS, load_benchmark, local_file

    cfg = load_config(config or [], [*(overrides or []), *_shortcuts(bench, model, n, limit)])
    bench_name = cfg.eval.bench
    if bench_name in BENCHMARKS and local_file(bench_name, cfg) is None:
        info(f"[dim]{bench_name}.jsonl is not in data.dir; trying the Hugging Face Hub ({BENCHMARKS[bench_name].dataset})[/]")
    full = load_benchmark(bench_name, cfg)  # fail on data before loading a model
    pset = load_benchmark(bench_name, cfg, limit=cfg.eval.limit) if cfg.eval.limit is not None else full
    problems = pset.problems
    if pset.repeats.any:  # a set shipped k times is k samples of each problem, not k times as many problems
        for line in pset.repeats.lines():
            info(f"[dim]{line}[/]")
        info("[dim]repeated rows are evaluated once each; use --n K for K samples per problem[/]")
    k, sampling, protocol = eval_protocol(cfg)  # greedy pass@1 (ToRL) or sampled avg@k (ReTool: 32, t 1.0, top_p 0.7)

    from toolrl.models import resolve_model_path
    from toolrl.rollout import build_engine, choose_backend
    from toolrl.sandbox import build_sandbox

    run_dir = new_run_dir("eval", out if out is not None else cfg.run.dir, cfg.run.name)
    save_config(cfg, run_dir / "config.yaml")
    with err_console.status("resolving the model and choosing the rollout engine ..."):
        # A training run or checkpoint resolves to its final model, or is exported once into the cache.
        model_dir = resolve_model_path(cfg.model)
        if cfg.model.path and Path(cfg.model.path).is_dir() and Path(model_dir) != Path(cfg.model.path):
            info(f"[dim]{cfg.model.path} -> model directory {model_dir}[/]")
        engine_cfg = copy.deepcopy(cfg)
        engine_cfg.model.path = model_dir
        choice = choose_backend(engine_cfg, "generate")
    info(f"[dim]{choice.header()}[/]")
    with err_console.status(f"loading model ({choice.name}) and sandbox ..."):
        engine = build_engine(engine_cfg, choice=choice)
        sandbox = build_sandbox(cfg)

    lock = threading.Lock()
    seen: dict[str, int] = {}
    tally = {"correct": 0, "done": 0, "problems": 0}
    try:
        with Progress(*rollout_columns(), console=err_console, transient=False) as bar:

            def describe(traj: Any) -> str:
                with lock:
                    tally["done"] += 1
                    tally["correct"] += bool(traj.correct)
                    seen[traj.problem.id] = seen.get(traj.problem.id, 0) + 1
                    tally["problems"] += seen[traj.problem.id] == k
                    return (f"{bench_name} · problems {tally['problems']}/{len(problems)} · "
                            f"acc {tally['correct'] / tally['done']:.1%}")

            events = RolloutBar.add(bar, bench_name, len(problems) * k, cfg.rollout.max_new_tokens, describe)
            result = evaluate(problems, cfg=cfg, engine=engine, sandbox=sandbox, n=k, sampling=sampling, progress=events)
    finally:
        for closable in (engine, sandbox):
            try:
                closable.close()
            except Exception:  # noqa: BLE001 - cleanup must not hide the real error
                pass

    results = {
        "bench": bench_name,
        "model": cfg.model.path or "embedded SmolLM2-135M-Instruct",
        "model_dir": model_dir,
        "n": k,
        "protocol": protocol,
        "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
                     "seed": sampling.seed},
        # Every problem is scored (or the run stops before it starts): a smaller denominator only comes from
        # eval.limit, and these two numbers say so.
        "problems_scored": len({t.problem.id for t in result.trajectories}),
        "problems_in_benchmark": len(full.problems),
        "tool": {"format": cfg.tool.format, "max_calls": cfg.tool.max_calls, "sandbox": cfg.sandbox.backend},
        "engine": {"name": choice.name, "reason": choice.reason},
        "metrics": result.metrics,
        "by_source": by_source(result.trajectories),
        "repeats": pset.repeats.lines() if pset.repeats.any else [],
        "run_dir": str(run_dir),
        "config": config_to_dict(cfg),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    with (run_dir / "rollouts.jsonl").open("w", encoding="utf-8") as f:
        for t in result.trajectories:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")

    err_console.print(results_table(results))
    if results["by_source"]:
        err_console.print(source_table(results))
    if compare:
        err_console.print(compare_table(bench_name, results))
    info(f"scored {results['problems_scored']} of the {results['problems_in_benchmark']} problems of {bench_name}")
    info(f"run dir: {run_dir}  (results.json, rollouts.jsonl; view with `toolrl inspect rollout {run_dir}`)")
    if json_out:
        print_json({k2: v for k2, v in results.items() if k2 != "config"})


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=False)(eval_command)


__all__ = ["register", "eval_command", "results_table"]
