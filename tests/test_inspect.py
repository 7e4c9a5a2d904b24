"""`toolrl inspect rollout` on hand-written run directories (eval and training layouts)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from toolrl.cli.inspect_cmd import render_rich
from toolrl.cli.main import app
from toolrl.eval.rollout_view import blocks, read_rollouts
from toolrl.types import ExecKind, Problem, ToolCall, Trajectory

runner = CliRunner()


def _traj(pid: str, correct: bool, kind: ExecKind = ExecKind.OK) -> Trajectory:
    t = Trajectory(problem=Problem(pid, f"What is 17*23? ({pid})", "391"), sample_index=0, prompt_text="p", prompt_ids=[1])
    t.append("model", "Let me compute.\n```python\nprint(17*23)\n```\n", [10, 11, 12, 13])
    t.append("observation", "```output\n391\n```\n", [20, 21])
    t.append("model", "So the answer is \\boxed{391}." if correct else "So \\boxed{390}.", [30, 31, 2])
    t.calls = [ToolCall(code="print(17*23)", kind=kind, observation="391")]
    t.extracted_answer, t.correct, t.reward = ("391", True, 1.0) if correct else ("390", False, -1.0)
    return t


def _write(path: Path, trajs: list[Trajectory], extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**t.to_dict(), **(extra or {})}) + "\n" for t in trajs))


@pytest.fixture()
def eval_run(tmp_path: Path) -> Path:
    _write(tmp_path / "rollouts.jsonl", [_traj("a", True), _traj("b", False, ExecKind.ERROR), _traj("c", False)])
    (tmp_path / "config.yaml").write_text("model:\n  path: /nonexistent/model\n")  # tokenizer unavailable
    return tmp_path


def test_plain_output_shows_everything_a_reader_needs(eval_run: Path) -> None:
    res = runner.invoke(app, ["inspect", "rollout", str(eval_run), "--index", "0"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "What is 17*23? (a)" in out
    assert "code · model-written (trained on)" in out and "print(17*23)" in out
    assert "interpreter output · masked (not trained on)" in out and "391" in out
    assert "ANSWER: 391" in out and "GROUND TRUTH: 391" in out and "correct" in out
    assert "reward +1" in out
    assert "\x1b[" not in out and "╭" not in out  # plain when not a terminal


def test_filters(eval_run: Path) -> None:
    out = runner.invoke(app, ["inspect", "rollout", str(eval_run), "--wrong"]).stdout
    assert "problem b" in out and "problem c" in out and "problem a" not in out
    out = runner.invoke(app, ["inspect", "rollout", str(eval_run), "--with-errors"]).stdout
    assert "problem b" in out and "problem c" not in out
    out = runner.invoke(app, ["inspect", "rollout", str(eval_run), "--limit", "1"]).stdout
    assert out.count("=" * 100) == 1


def test_tokens_show_ids_and_mask_without_a_tokenizer(eval_run: Path) -> None:
    out = runner.invoke(app, ["inspect", "rollout", str(eval_run), "-i", "0", "--tokens"]).stdout
    rows = [r for r in (line.split() for line in out.splitlines()) if len(r) == 3 and all(x.isdigit() for x in r)]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(10, 1), (11, 1), (12, 1), (13, 1), (20, 0), (21, 0),
                                                      (30, 1), (31, 1), (2, 1)]


def test_training_layout_picks_latest_or_named_step(tmp_path: Path) -> None:
    _write(tmp_path / "rollouts" / "step_000001.jsonl", [_traj("early", True)])
    _write(tmp_path / "rollouts" / "step_000012.jsonl", [_traj("late", True)], extra={"advantage": 0.5})
    out = runner.invoke(app, ["inspect", "rollout", str(tmp_path)]).stdout
    assert "problem late" in out and "advantage 0.5" in out  # extra fields written by the trainer are shown
    out = runner.invoke(app, ["inspect", "rollout", str(tmp_path), "--step", "1"]).stdout
    assert "problem early" in out


def test_errors_are_one_line_with_a_hint(tmp_path: Path, eval_run: Path) -> None:
    from toolrl.errors import DataError

    res = runner.invoke(app, ["inspect", "rollout", str(tmp_path / "missing")])
    assert isinstance(res.exception, DataError) and res.exception.hint
    _write(tmp_path / "t" / "rollouts" / "step_000003.jsonl", [_traj("x", True)])
    res = runner.invoke(app, ["inspect", "rollout", str(tmp_path / "t"), "--step", "7"])
    assert isinstance(res.exception, DataError) and "3" in (res.exception.hint or "")
    res = runner.invoke(app, ["inspect", "rollout", str(eval_run), "--index", "9"])
    assert isinstance(res.exception, DataError) and "0..2" in (res.exception.hint or "")


def test_blocks_split_code_from_prose() -> None:
    kinds = [b.kind for b in blocks(_traj("a", True))]
    assert kinds == ["prose", "code", "observation", "prose"]


def test_terminal_rendering_highlights_and_marks_masked_output(eval_run: Path) -> None:
    rec = read_rollouts(eval_run / "rollouts.jsonl")[0]
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="truecolor", width=100)
    for part in render_rich(rec, lambda tid: f"<{tid}>", tokens=True):
        console.print(part)
    out = buf.getvalue()
    assert "masked (not trained on)" in out and "\x1b[" in out and "<20>" in out
