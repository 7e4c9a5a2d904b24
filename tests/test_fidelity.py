"""The papers' settings table (src/toolrl/fidelity/paper_settings.yaml) against the shipped recipes and paper sweeps,
loaded through the real config loader, and the generated docs/fidelity.md."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from toolrl.fidelity import divergences, load_papers, render_markdown

REPO = Path(__file__).resolve().parents[1]


def test_every_paper_recipe_and_sweep_arm_matches_the_table() -> None:
    assert divergences() == []


def test_the_check_catches_a_divergence() -> None:
    papers = load_papers()
    torl = papers[0]
    rows = list(torl.settings)
    clip = next(i for i, r in enumerate(rows) if r.setting == "PPO clip")
    rows[clip] = dataclasses.replace(rows[clip], keys={"algo.clip_high": 0.28})  # the clip-higher ToRL never used
    axis = next(i for i, r in enumerate(rows) if r.sweep_axes)
    rows[axis] = dataclasses.replace(rows[axis], sweep_axes={"paper/torl_max_calls": {"tool.max_calls": [1, 2]}})
    found = divergences([dataclasses.replace(torl, settings=tuple(rows))])
    assert any("configs/torl_1p5b.yaml has algo.clip_high=0.2" in d for d in found)
    assert any("configs/torl_7b.yaml" in d for d in found)
    assert any("torl_exec_penalty.yaml run" in d and "clip_high" in d for d in found)  # sweep arms are checked too
    assert any("axis tool.max_calls is [0, 1, 2]" in d for d in found)


def test_rows_are_complete_and_every_paper_sweep_is_covered() -> None:
    papers = load_papers()
    assert {p.name for p in papers} == {"torl", "retool"}
    listed = {s for p in papers for s in p.sweeps}
    # sweeps/paper/ also holds paper-scale sweeps of later work (SimpleTIR, DAPO, ...; docs/stabilisers.md): the
    # table covers the two papers' own, named torl_* and retool_*.
    shipped = {p.relative_to(REPO / "sweeps").with_suffix("").as_posix()
               for p in (REPO / "sweeps" / "paper").glob("*.yaml") if p.stem.split("_")[0] in ("torl", "retool")}
    assert listed == shipped
    for p in papers:
        for r in p.settings:
            assert r.source and r.value and (r.keys or r.sweep_axes or r.status == "differs"), r.setting
            if r.status == "unknown":
                assert r.value == "unknown" or "not stated" in r.value, r.setting  # unknowns are never invented


def test_fidelity_page_is_generated_and_up_to_date() -> None:
    page = (REPO / "docs" / "fidelity.md").read_text()
    assert page == render_markdown(), "regenerate: python -m toolrl.fidelity > docs/fidelity.md"
    out = subprocess.run([sys.executable, "-m", "toolrl.fidelity"], capture_output=True, text=True, check=True).stdout
    assert out == page
    assert "| PPO clip |" in page and "`tool.trigger=output_fence`" in page and "| unknown |" in page
