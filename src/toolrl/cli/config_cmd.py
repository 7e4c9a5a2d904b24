"""`toolrl config`: show the resolved configuration and document every key."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from toolrl.cli.common import ConfigOpt, JsonOpt, OverridesArg, out_console, print_json


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show and check configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(config: ConfigOpt = None, overrides: OverridesArg = None, as_json: JsonOpt = False) -> None:
        """Validate and print the fully resolved config (defaults <- files <- overrides)."""
        from toolrl.config.loader import config_to_dict, config_to_yaml, load_config

        cfg = load_config(config or [], overrides or [])
        if as_json:
            print_json(config_to_dict(cfg))
        else:
            out_console.print(config_to_yaml(cfg), markup=False, highlight=False, end="")

    @config_app.command("keys")
    def keys(
        prefix: Annotated[Optional[str], typer.Argument(help="Only keys starting with this, e.g. sandbox.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List every config key with its type, default and meaning."""
        from toolrl.config.reference import key_rows

        rows = [r for r in key_rows() if not prefix or r["key"].startswith(prefix)]
        if as_json:
            print_json(rows)
            return
        from rich.table import Table

        table = Table(show_lines=False)
        for col in ("key", "type", "default", "help"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["key"], r["type"], r["default"], r["help"])
        out_console.print(table)
