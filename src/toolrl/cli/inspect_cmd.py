"""`toolrl inspect rollout`: read saved trajectories the way a person wants to: text, code, masked output, verdict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

inspect_app = typer.Typer(help="Look inside run directories.", no_args_is_help=True)

_OBS_LABEL = "interpreter output · masked (not trained on)"
_CODE_LABEL = "code · model-written (trained on)"


def _decoder(run_dir: Path) -> Callable[[int], str] | None:
    """Token text from the run's own tokenizer; None (ids only) when it cannot be loaded."""
    cfg_path = (run_dir if run_dir.is_dir() else run_dir.parent) / "config.yaml"
    try:
        from toolrl.config import load_config
        from toolrl.models import load_tokenizer, resolve_model_path

        cfg = load_config([cfg_path]) if cfg_path.is_file() else load_config()
        tok = load_tokenizer(resolve_model_path(cfg.model))
    except Exception as e:  # noqa: BLE001 - the ids are still worth showing
        from toolrl.cli.common import err_console

        err_console.print(f"[yellow]note:[/] tokenizer unavailable ({type(e).__name__}); showing token ids only")
        return None
    return lambda tid: tok.decode([tid])


def _header(rec: Any) -> str:
    t = rec.traj
    calls = ", ".join(c.kind.value for c in t.calls) or "none"
    reward = "-" if t.reward is None else f"{t.reward:+g}"
    extra = "".join(f" · {k} {v}" for k, v in rec.extra.items() if isinstance(v, (int, float, str)))
    return (f"#{rec.index} · problem {t.problem.id} · sample {t.sample_index} · reward {reward} · "
            f"finish {t.finish_reason} · calls [{calls}] · {len(t.response_ids)} tokens{extra}")


def render_plain(rec: Any, decode: Callable[[int], str] | None, tokens: bool) -> str:
    from toolrl.eval.rollout_view import blocks, token_rows, verdict

    t = rec.traj
    lines = ["=" * 100, _header(rec), "", "PROBLEM", t.problem.problem.strip(), "", "RESPONSE"]
    for b in blocks(t):
        if b.kind == "observation":
            lines += [f"---- {_OBS_LABEL} ----", b.text.strip("\n"), "---- end of interpreter output ----"]
        elif b.kind == "code":
            lines += [f"---- {_CODE_LABEL} ----", b.text.strip("\n"), "---- end of code ----"]
        else:
            lines.append(b.text.strip("\n"))
    lines += ["", f"ANSWER: {t.extracted_answer if t.extracted_answer is not None else '(none)'}    "
                  f"GROUND TRUTH: {t.problem.answer}    -> {verdict(t)}"]
    if tokens:
        lines += ["", "TOKENS (pos  id  mask  text; mask 1 = model token, 0 = observation token)"]
        for pos, tid, mask, text in token_rows(t, decode):
            lines.append(f"{pos:5d} {tid:7d}  {mask}  {text!r}" if text is not None else f"{pos:5d} {tid:7d}  {mask}")
    return "\n".join(lines)


def render_rich(rec: Any, decode: Callable[[int], str] | None, tokens: bool) -> list[Any]:
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    from toolrl.eval.rollout_view import blocks, code_body, token_rows, verdict

    t = rec.traj
    parts: list[Any] = [Text(_header(rec), style="bold"), Panel(Text(t.problem.problem.strip()), title="problem",
                                                              title_align="left", border_style="blue")]
    for b in blocks(t):
        if b.kind == "observation":
            parts.append(Panel(Text(b.text.strip("\n"), style="dim"), title=_OBS_LABEL, title_align="left",
                               border_style="magenta", style="dim"))
        elif b.kind == "code":
            parts.append(Panel(Syntax(code_body(b.text), "python", theme="ansi_dark", word_wrap=True),
                               title=_CODE_LABEL, title_align="left", border_style="green"))
        else:
            parts.append(Text(b.text.strip("\n")))
    ok = t.correct is True
    parts.append(Text.assemble(("answer ", "bold"), str(t.extracted_answer), ("   ground truth ", "bold"), t.problem.answer,
                               "   ", (verdict(t), "bold green" if ok else "bold red")))
    if tokens:
        table = Table(title="tokens: green = model (mask 1, trained on), magenta = observation (mask 0)",
                      title_justify="left")
        for col in ("pos", "id", "mask", "text"):
            table.add_column(col, justify="right" if col != "text" else "left")
        for pos, tid, mask, text in token_rows(t, decode):
            table.add_row(str(pos), str(tid), str(mask), "" if text is None else repr(text),
                          style="green" if mask == 1 else "magenta")
        parts.append(table)
    return parts


@inspect_app.command("rollout")
def rollout_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or a rollouts .jsonl file).")],
    step: Annotated[Optional[int], typer.Option("--step", help="Training step to show (default: the latest).")] = None,
    index: Annotated[Optional[int], typer.Option("--index", "-i", help="Show only the trajectory on this line (0-based).")] = None,
    wrong: Annotated[bool, typer.Option("--wrong", help="Only trajectories graded wrong.")] = False,
    with_errors: Annotated[bool, typer.Option("--with-errors", help="Only trajectories with a failed code call.")] = False,
    tokens: Annotated[bool, typer.Option("--tokens", help="Show every response token with its id and loss mask.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N trajectories.")] = 5,
) -> None:
    """Show saved trajectories: problem, model text, highlighted code, masked interpreter output, verdict, reward."""
    from toolrl.cli.common import err_console, out_console
    from toolrl.eval.rollout_view import read_rollouts, rollout_file, select

    path = rollout_file(run_dir, step)
    records = read_rollouts(path)
    chosen = select(records, index=index, wrong=wrong, with_errors=with_errors)
    shown = chosen[:limit]
    decode = _decoder(run_dir) if tokens else None
    plain = not sys.stdout.isatty()  # piped or redirected: plain text, no boxes or colour codes (Rich honours NO_COLOR)
    for rec in shown:
        if plain:
            sys.stdout.write(render_plain(rec, decode, tokens) + "\n")
        else:
            for part in render_rich(rec, decode, tokens):
                out_console.print(part)
            out_console.rule(style="dim")
    sys.stdout.flush()
    more = f"; {len(chosen) - len(shown)} more match (use --limit)" if len(chosen) > len(shown) else ""
    err_console.print(f"{path}: showed {len(shown)} of {len(records)} trajectories{more}")


def register(app: typer.Typer) -> None:
    app.add_typer(inspect_app, name="inspect")
