"""The papers' settings as data (``paper_settings.yaml``): the table in docs/fidelity.md and the check that every
paper recipe and paper-sweep arm still carries them.

    python -m toolrl.fidelity > docs/fidelity.md       # regenerate the page
    toolrl.fidelity.divergences()                       # [] when every recipe and sweep matches the table
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SETTINGS_FILE = Path(__file__).with_name("paper_settings.yaml")
_REPO = Path(__file__).resolve().parents[3]  # the checkout: configs/ and sweeps/ live there
STATUSES = ("matches", "unknown", "differs")


@dataclass(frozen=True)
class Setting:
    paper: str
    setting: str
    value: str
    source: str
    status: str
    keys: dict[str, Any] = field(default_factory=dict)
    recipes: tuple[str, ...] = ()
    sweep_axes: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Paper:
    name: str
    title: str
    recipes: tuple[str, ...]
    sweeps: tuple[str, ...]
    settings: tuple[Setting, ...]


def load_papers(path: Path = SETTINGS_FILE) -> list[Paper]:
    """Parse the settings file; a malformed row raises ValueError naming it."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    papers = []
    for name, meta in raw["papers"].items():
        rows = []
        for row in raw["settings"][name]:
            if row.get("status") not in STATUSES:
                raise ValueError(f"{path.name}: {name} / {row.get('setting')}: status must be one of {STATUSES}")
            if row["status"] != "matches" and not row.get("note"):
                raise ValueError(f"{path.name}: {name} / {row['setting']}: a {row['status']} row needs a note")
            rows.append(Setting(paper=name, setting=str(row["setting"]), value=str(row["value"]),
                                source=str(row["source"]), status=row["status"], keys=dict(row.get("keys") or {}),
                                recipes=tuple(row.get("recipes") or meta["recipes"]),
                                sweep_axes=dict(row.get("sweep_axes") or {}), note=str(row.get("note") or "")))
        papers.append(Paper(name, meta["title"], tuple(meta["recipes"]), tuple(meta["sweeps"]), tuple(rows)))
    return papers


def same(a: Any, b: Any) -> bool:
    """Config values compare exactly, floats up to rounding (1e-6 written as 1.0e-6 or 0.000001)."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def divergences(papers: list[Paper] | None = None, repo: Path = _REPO) -> list[str]:
    """Every place where a recipe (configs/<name>.yaml) or a paper-sweep arm (sweeps/<name>.yaml), loaded through
    the real config loader, differs from the table; [] when all agree."""
    from toolrl.config.loader import flatten, load_config
    from toolrl.sweep.spec import load_spec, validate_runs

    out: list[str] = []
    for paper in papers if papers is not None else load_papers():
        recipes = {name: flatten(load_config(name)) for name in paper.recipes}
        arms: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        axes: dict[str, dict[str, list[Any]]] = {}
        bases: dict[str, set[str]] = {}
        for sweep in paper.sweeps:
            spec = load_spec(repo / "sweeps" / f"{sweep}.yaml")
            axes[sweep] = {a.key: list(a.values) for a in spec.axes}
            bases[sweep] = {Path(c).stem for c in spec.config_files}
            arms[sweep] = [(run.name, flatten(cfg)) for run, cfg in validate_runs(spec)]
        for row in paper.settings:
            where = f"{paper.name} / {row.setting}"
            for key, want in row.keys.items():
                for name in row.recipes:
                    got = recipes[name].get(key, "<no such key>")
                    if not same(got, want):
                        out.append(f"{where}: configs/{name}.yaml has {key}={got!r}, the table says {want!r}")
                for sweep, runs in arms.items():
                    if key in axes[sweep] or not bases[sweep] & set(row.recipes):
                        continue  # the sweep varies it on purpose (see sweep_axes), or the row is another recipe's
                    for run, values in runs:
                        if not same(values.get(key), want):
                            out.append(f"{where}: sweeps/{sweep}.yaml run {run} has {key}={values.get(key)!r}, "
                                       f"the table says {want!r}")
            for sweep, want_axes in row.sweep_axes.items():
                if sweep not in axes:
                    out.append(f"{where}: sweep {sweep} is not listed among the paper's sweeps")
                    continue
                for key, values in want_axes.items():
                    got_values = axes[sweep].get(key)
                    if got_values is None or len(got_values) != len(values) or not all(map(same, got_values, values)):
                        out.append(f"{where}: sweeps/{sweep}.yaml axis {key} is {got_values!r}, the table says {values!r}")
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _toolrl(row: Setting) -> str:
    parts = [f"`{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}`" for k, v in row.keys.items()]
    for sweep, want in row.sweep_axes.items():
        parts += [f"`sweeps/{sweep}.yaml`: `{k}` in {v}" for k, v in want.items()]
    return "<br>".join(parts) or "-"


def render_markdown(papers: list[Paper] | None = None) -> str:
    """docs/fidelity.md."""
    papers = papers if papers is not None else load_papers()
    lines = [
        "# Fidelity to the papers",
        "",
        "<!-- Generated by `python -m toolrl.fidelity > docs/fidelity.md` from src/toolrl/fidelity/paper_settings.yaml;"
        " edit that file, not this page. -->",
        "",
        "Each setting of the ToRL and ReTool papers, where it is written, and the toolrl key that carries it. "
        "`tests/test_fidelity.py` loads every recipe in `configs/` and every arm of every paper sweep in "
        "`sweeps/paper/` through the config loader and fails when one differs from this table.",
        "",
        "- **paper** is the paper's text; **code** is the authors' released code (ToRL: GAIR-NLP/ToRL, its training "
        "script and verl fork; ReTool: ReTool-RL/ReTool, evaluation code only); **verl recipe** is verl's "
        "`recipe/retool`, a third-party reproduction, used only where the paper is silent.",
        "- Status: **matches** = toolrl is set to that value; **unknown** = neither the paper nor the authors' code "
        "states it, and the note says where toolrl's value comes from; **differs** = toolrl deliberately differs, "
        "and the note says how.",
        "",
    ]
    for paper in papers:
        lines += [f"## {paper.title}", "",
                  f"Recipes: {', '.join(f'`configs/{r}.yaml`' for r in paper.recipes)}. "
                  f"Paper sweeps: {', '.join(f'`sweeps/{s}.yaml`' for s in paper.sweeps)}.", "",
                  "| setting | paper / authors | source | toolrl | status | notes |",
                  "|---|---|---|---|---|---|"]
        for row in paper.settings:
            setting = row.setting if set(row.recipes) == set(paper.recipes) else (
                f"{row.setting} ({', '.join(row.recipes)})")
            lines.append("| " + " | ".join(_cell(c) for c in (setting, row.value, row.source, _toolrl(row), row.status,
                                                                 row.note)) + " |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["Paper", "Setting", "load_papers", "divergences", "render_markdown", "SETTINGS_FILE"]
