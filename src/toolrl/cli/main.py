"""Entry point: builds the Typer app and maps known failures to one `error:` and one `hint:` line."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from toolrl import __version__
from toolrl.errors import ToolrlError

app = typer.Typer(
    name="toolrl",
    help="Tool-integrated RL for language models: train, evaluate, sweep and inspect code-interpreter rollouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module registers its commands; heavy libraries are imported inside the commands, so --help stays fast.
_COMMAND_MODULES = ["train_cmd", "sweep_cmd", "eval_cmd", "inspect_cmd", "sandbox_cmd", "config_cmd", "export_cmd",
                    "data_cmd", "analyze_cmd", "plan_cmd", "serve_cmd"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"toolrl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Set process-wide defaults before any command runs."""
    # Small shared CPUs: one intra-op thread per process avoids 20-80x step-time spikes (see docs/performance).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _unavailable(name: str) -> None:
    """A command whose subsystem has not landed yet says so clearly instead of vanishing from --help."""

    @app.command(name, help=f"(not available yet) `toolrl {name}`.", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def _stub() -> None:
        raise ToolrlError(f"`toolrl {name}` is not available in this version yet", "see the project's open issues")


for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"toolrl.cli.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"toolrl.cli.{_name}":
            raise
        _unavailable(_name.removesuffix("_cmd"))
        continue
    _mod.register(app)


def _fail(message: str, hint: str | None, code: int) -> None:
    from toolrl.cli.common import err_console

    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold cyan]hint:[/] {hint}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    show_tb = os.environ.get("TOOLRL_TRACEBACK", "") not in ("", "0")
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except ToolrlError as e:
        if show_tb:
            raise
        _fail(e.message, e.hint, 2)
    except KeyboardInterrupt:
        _fail("interrupted", "a training run resumes with `toolrl train --resume RUN_DIR`", 130)
    except Exception as e:  # an unexpected bug: one line, the traceback behind an env var
        if show_tb:
            raise
        _fail(f"{type(e).__name__}: {e}".splitlines()[0], "set TOOLRL_TRACEBACK=1 to see the full traceback", 1)


if __name__ == "__main__":
    main()
