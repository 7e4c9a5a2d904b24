"""`toolrl sandbox run` (execute code exactly as a rollout would) and `toolrl sandbox check` (probe isolation)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, OverridesArg, err_console, out_console, print_json

BackendOpt = Annotated[
    Optional[str], typer.Option("--backend", "-b", help="local, subprocess, jupyter or e2b (default: sandbox.backend).")
]


def _config(config: list[str] | None, overrides: list[str] | None, backend: str | None):  # -> RootConfig
    from toolrl.config import load_config

    extra = [f"sandbox.backend={backend}"] if backend else []
    return load_config(config, [*(overrides or []), *extra])


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Run code in the sandbox and check its isolation.", no_args_is_help=True)
    app.add_typer(group, name="sandbox")

    @group.command("run")
    def run(
        file: Annotated[str, typer.Argument(help="Python file to run, or - for stdin.")] = "-",
        overrides: OverridesArg = None,
        config: ConfigOpt = None,
        backend: BackendOpt = None,
        timeout: Annotated[Optional[float], typer.Option(help="Seconds (default: tool.timeout_s).")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Run code as a rollout would; print the observation the model would see and the result kind."""
        from toolrl.errors import ToolrlError
        from toolrl.sandbox import build_sandbox
        from toolrl.sandbox.results import result_to_dict

        cfg = _config(config, overrides, backend)
        if file == "-":
            code = sys.stdin.read()
        else:
            path = Path(file)
            if not path.is_file():
                raise ToolrlError(f"file '{file}' not found", "give a Python file, or - to read the code from stdin")
            code = path.read_text()
        with err_console.status(f"starting the {cfg.sandbox.backend} sandbox"):
            sandbox = build_sandbox(cfg)
        try:
            result = sandbox.run(code, timeout_s=timeout or cfg.tool.timeout_s, session="cli")
        finally:
            sandbox.close_session("cli")
            sandbox.close()
        observation = _observation(result, cfg)
        if as_json:
            print_json({**result_to_dict(result), "observation": observation})
            return
        sys.stdout.write(observation if observation.endswith("\n") else observation + "\n")
        style = "green" if result.kind.value == "ok" else "red" if result.kind.value == "infra_error" else "yellow"
        extra = f" ({result.detail})" if result.detail else ""
        err_console.print(f"[{style}]{result.kind.value}[/]{extra}  {result.duration_s * 1000:.0f} ms", highlight=False)

    @group.command("check")
    def check(
        overrides: OverridesArg = None,
        config: ConfigOpt = None,
        backend: BackendOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Report which protections are active on this host, by running probes inside the sandbox."""
        from rich.table import Table

        from toolrl.sandbox import build_sandbox
        from toolrl.sandbox.probe import LAYER_HELP, run_probe

        cfg = _config(config, overrides, backend)
        with err_console.status("probing the sandbox"):
            sandbox = build_sandbox(cfg)
            try:
                checks = run_probe(sandbox)
                info = dict(getattr(sandbox, "info", {}) or {})
            finally:
                sandbox.close()
        layers: dict[str, str] = info.get("protections", {})
        level = info.get("level")
        if as_json:
            print_json({"backend": cfg.sandbox.backend, "level": level, "layers": layers,
                        "checks": [c.__dict__ for c in checks], "isolated": all(c.active for c in checks)})
            return
        if layers:
            table = Table(title=f"isolation layers on this host: level [bold]{level}[/] "
                                f"(required: sandbox.isolation={cfg.sandbox.isolation})")
            table.add_column("layer")
            table.add_column("state", overflow="fold")
            table.add_column("what it gives", overflow="fold")
            for name, state in layers.items():
                style = "green" if state.startswith("ok") else "dim" if state.startswith("not needed") else "red"
                table.add_row(name, f"[{style}]{state}[/]", LAYER_HELP.get(name, ""))
            out_console.print(table)
        table = Table(title=f"probes run inside the sandbox ({cfg.sandbox.backend})")
        table.add_column("protection")
        table.add_column("active")
        table.add_column("evidence", overflow="fold")
        for c in checks:
            table.add_row(c.name, "[green]yes[/]" if c.active else "[red]NO[/]", c.evidence)
        out_console.print(table)
        if not all(c.active for c in checks):
            raise typer.Exit(1)


def _observation(result, cfg) -> str:  # noqa: ANN001
    try:
        from toolrl.rollout.formats import format_observation
    except ImportError:  # the formatter is owned by the rollout; fall back to the raw text
        return result.stdout if result.kind.value == "ok" else (result.error_line or result.detail or "")
    return format_observation(result, cfg.tool)
