"""`toolrl plan`: the per-GPU memory plan and step time of a recipe on N GPUs, before anything is launched."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, OverridesArg, out_console, print_json


def plan_command(
    config: ConfigOpt = None,
    gpus: Annotated[int, typer.Option("--gpus", "-g", help="GPUs per node.", min=1)] = 8,
    gpu_mem: Annotated[float, typer.Option("--gpu-mem", help="Memory of one GPU in GB (GiB).", min=1)] = 80.0,
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Nodes.", min=1)] = 1,
    rollout_gpus: Annotated[Optional[int], typer.Option(
        "--rollout-gpus", help="placement=server: GPUs the rollout servers use (default: servers x TP).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(
        "--concurrency", help="Trajectories in flight per vLLM engine (default: its whole share of a step).")] = None,
    tflops: Annotated[float, typer.Option("--tflops", help="Stated dense bf16 TFLOP/s of one GPU.")] = 312.0,
    mfu: Annotated[float, typer.Option("--mfu", help="Stated share of peak the update reaches.")] = 0.35,
    hbm: Annotated[float, typer.Option("--hbm-gbs", help="Stated GPU memory bandwidth, GB/s (decoding).")] = 2000.0,
    fill: Annotated[float, typer.Option("--response-fill", help="Mean response length / rollout.max_new_tokens.")] = 0.5,
    json_out: JsonOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Per-GPU memory (model states by ZeRO stage, activations, vLLM weights and KV cache) and time per step of a
    recipe on GPUS x NODES GPUs. Exits with an error naming the setting to change when it does not fit."""
    from dataclasses import asdict

    from toolrl.config.loader import load_config
    from toolrl.errors import ConfigError
    from toolrl.placement.plan import PlanInputs, make_plan
    from toolrl.placement.shapes import model_shape

    cfg = load_config(config or [], overrides or [])
    shape = model_shape(cfg.model.path)
    inputs = PlanInputs(gpus_per_node=gpus, nodes=nodes, gpu_mem_gib=gpu_mem, gpu_tflops=tflops, mfu=mfu,
                        hbm_gbs=hbm, response_fill=fill, concurrency=concurrency, rollout_gpus=rollout_gpus)
    plan = make_plan(cfg, shape, inputs)
    if json_out:
        data = asdict(plan)
        data["fits"] = plan.fits
        print_json(data)
    else:
        _show(plan, cfg)
    if not plan.fits:
        first = plan.problems[0]
        more = f" (and {len(plan.problems) - 1} more above)" if len(plan.problems) > 1 else ""
        raise ConfigError(first.message + more, first.hint)


def _show(plan, cfg) -> None:  # noqa: ANN001 - Plan and RootConfig, imported lazily
    from rich.table import Table

    m, i = plan.model, plan.inputs
    out_console.print(
        f"[bold]{m.name}[/]: {m.total_params / 1e9:.2f}B parameters, {m.layers} layers, hidden {m.hidden}, "
        f"{m.heads} heads / {m.kv_heads} KV heads, vocab {m.vocab}  [dim](shape from {m.source})[/]")
    layout = (f"{i.total_gpus} x {i.gpu_mem_gib:g} GiB GPUs ({i.nodes} node(s) x {i.gpus_per_node}) · "
              f"{plan.train_gpus} training ranks, ZeRO-{cfg.deepspeed.zero_stage}"
              f"{' + optimizer offload' if cfg.deepspeed.offload_optimizer else ''} · rollouts: ")
    if plan.placement == "hf":
        layout += "hf engine on the policy"
    else:
        layout += (f"vLLM {plan.placement}, {plan.engines} engine(s) x TP {plan.tp}"
                   + (f" on {plan.rollout_gpus} separate GPUs" if plan.rollout_gpus else ""))
    out_console.print(layout)
    table = Table(title="memory per GPU (GiB)", title_justify="left")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("note", overflow="fold")
    for title, rows in (("training GPU, resident", plan.train), ("update activations", plan.activations),
                        ("vLLM share " + ("(asleep during the update)" if plan.placement == "colocate" else ""), plan.vllm)):
        if not rows:
            continue
        table.add_row(f"[bold]{title}[/]", "", "")
        for r in rows:
            table.add_row("  " + r.name, f"{r.gib:.2f}", r.note)
    table.add_section()
    for phase, used in plan.phases.items():
        ok = used <= i.gpu_mem_gib
        table.add_row(f"[bold]peak: {phase}[/]", f"[{'green' if ok else 'red'}]{used:.1f}[/]",
                      "fits" if ok else f"over {i.gpu_mem_gib:g}")
    table.add_row("host memory per node (model states)", f"{plan.host_gib_per_node:.0f}", "DeepSpeed's estimate, x1.5 buffer")
    out_console.print(table)
    t = plan.times
    parts = []
    if "generation_s" in t:
        parts.append(f"generation {_s(t['generation_s'])} ({t['gen_tokens_per_s']:.0f} tok/s over all engines)")
    parts.append(f"update {_s(t['update_s'])}")
    out_console.print(f"time per step ~{_s(t['step_s'])}: " + ", ".join(parts) +
                      f"  [dim](stated rates: {i.gpu_tflops:g} TFLOP/s x MFU {i.mfu:g}, {i.hbm_gbs:g} GB/s, responses "
                      f"{i.response_fill:.0%} of the budget; sandbox, prefill and weight sync not counted)[/]")
    for n in plan.notes:
        out_console.print(f"[yellow]note:[/] {n}")
    if plan.fits:
        out_console.print("[bold green]fits[/]")


def _s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)


__all__ = ["register", "plan_command"]
