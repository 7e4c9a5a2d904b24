"""Shared CLI pieces: consoles (diagnostics to stderr, data to stdout), option aliases, run directories."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

# Diagnostics, progress and tables meant for people go to stderr; data a script reads goes to stdout.
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

ConfigOpt = Annotated[
    Optional[list[str]],
    typer.Option("--config", "-c", help="YAML config file or name from configs/ (repeatable; later files win)."),
]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Config overrides as key=value, e.g. tool.max_calls=2 sandbox.backend=jupyter.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default: runs/<command>-<time>).")]


def print_json(obj: Any) -> None:
    """Plain JSON on stdout: no colour, no wrapping, so scripts can parse it."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def new_run_dir(kind: str, explicit: Path | str | None = None, name: str | None = None) -> Path:
    """Create (or reuse, when explicit) a run directory. Default: ./runs/<kind>-<YYYYmmdd-HHMMSS>."""
    if explicit is not None:
        path = Path(explicit)
    else:
        root = Path(os.environ.get("TOOLRL_RUNS_DIR", "runs"))
        path = root / (name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
        i = 1
        while path.exists():
            path = path.with_name(f"{path.name.rsplit('.', 1)[0]}.{i}")
            i += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def info(msg: str) -> None:
    err_console.print(msg)
