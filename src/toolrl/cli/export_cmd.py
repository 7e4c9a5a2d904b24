"""`toolrl export`: a training checkpoint as a Hugging Face model directory (config, tokenizer, safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolrl.cli.common import JsonOpt, err_console, info, print_json
from toolrl.errors import ToolrlError

SourceArg = Annotated[Path, typer.Argument(help="A checkpoint (RUN/checkpoints/step_N), or a run directory or its "
                                           "checkpoints/ directory (the newest checkpoint).", show_default=False)]
OutArg = Annotated[Path, typer.Argument(help="Directory to write the model to (replaced if it exists).", show_default=False)]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="Cast the weights: float32, bfloat16 or float16 "
                                                 "(default: as stored, float32 for CPU runs).")]


def export_command(source: SourceArg, out: OutArg, dtype: DtypeOpt = None, json_out: JsonOpt = False) -> None:
    """Write a training checkpoint's policy as a Hugging Face model directory that `toolrl eval --model`,
    transformers and vLLM load. (`toolrl eval --model RUN/checkpoints/step_N` also works directly.)"""
    from toolrl.train.checkpoint import tree_size
    from toolrl.train.disk import human
    from toolrl.train.export import export_checkpoint, find_checkpoint

    checkpoint = find_checkpoint(source) if source.is_dir() else None
    if checkpoint is None:
        raise ToolrlError(f"'{source}' is not a training checkpoint or run directory",
                          "pass RUN/checkpoints/step_N (see `ls RUN/checkpoints`) or the run directory itself")
    with err_console.status(f"exporting {checkpoint} ..."):
        written = export_checkpoint(checkpoint, out, dtype=dtype)
    info(f"exported {checkpoint} -> {written} ({human(tree_size(written))}); "
         f"evaluate: toolrl eval --model {written} --bench arith")
    if json_out:
        print_json({"checkpoint": str(checkpoint), "model_dir": str(written)})


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


__all__ = ["register", "export_command"]
