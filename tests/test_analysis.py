"""Behaviour metrics on hand-built trajectories whose every value is known, and `toolrl analyze` on run directories
built from them (train, eval, several evals, sweep, compare, bad input)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from toolrl.analysis.features import code_lines, token_index, traj_stats
from toolrl.analysis.metrics import average, compute
from toolrl.analysis.purpose import classify_code
from toolrl.rollout.formats import RETOOL, TORL
from toolrl.types import ExecKind, Problem, Segment, ToolCall, Trajectory

BLOCK = "```python\n{}\n```\n"


def make_traj(parts: list[tuple[str, str]], kinds: list[ExecKind] = (), *, correct: bool | None = True,
              unexecuted: list[str] | None = None, pid: str = "p1", sample: int = 0) -> Trajectory:
    """One token per character, so token positions equal character positions and every expected value is exact.
    ``parts`` are (segment kind, text); calls take their code from the model segment before each observation."""
    t = Trajectory(Problem(pid, "q", "1"), sample, "prompt", [1, 2, 3])
    codes = []
    for i, (kind, text) in enumerate(parts):
        t.append(kind, text, [ord(c) for c in text])
        if kind == "model" and i + 1 < len(parts) and parts[i + 1][0] == "observation":
            codes.append(text.rsplit("```python\n", 1)[1].split("\n```")[0])
    t.calls = [ToolCall(code=c, kind=k, observation="") for c, k in zip(codes, kinds)]
    t.correct = correct
    t.unexecuted_blocks = unexecuted
    return t


def one_call(kind: ExecKind = ExecKind.OK, correct: bool | None = True, code: str = "print(1 + 1)") -> Trajectory:
    return make_traj([("model", "Compute. " + BLOCK.format(code)), ("observation", "```output\n2\n```\n"),
                      ("model", "So \\boxed{2}.")], [kind], correct=correct, unexecuted=[])


# ---------------------------------------------------------------- per-response numbers


def test_invocation_timing_is_the_token_position_of_the_first_block_over_length():
    lead = "Let me think about it. "
    t = make_traj([("model", lead + BLOCK.format("print(2)")), ("observation", "```output\n2\n```\n"),
                   ("model", "Check: " + BLOCK.format("print(3)")), ("observation", "```output\n3\n```\n"),
                   ("model", "\\boxed{2}")], [ExecKind.OK, ExecKind.OK], unexecuted=[])
    s = traj_stats(t, TORL)
    assert s.first_call_pos == pytest.approx(len(lead) / len(t.response_ids))
    # No call: no position (not 0).
    assert traj_stats(make_traj([("model", "\\boxed{2}")], unexecuted=[]), TORL).first_call_pos is None


def test_token_index_is_exact_with_a_decoder_and_interpolated_without():
    vocab = {1: "a", 2: "bbbbbbbb", 3: "c", 4: "```python"}
    seg = Segment("model", "abbbbbbbbc```python", [1, 2, 3, 4])
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    assert token_index(seg, 10, decode) == 3  # the fence starts inside token 4 (index 3)
    assert token_index(seg, 0, decode) == 0 and token_index(seg, 5, decode) == 1
    assert token_index(seg, 10) == 2  # interpolation: 10 * 4 / 19 -> 2, off by one on uneven tokens


def test_code_lines_count_non_empty_non_comment_lines_over_written_blocks():
    code = "import math\n\n# plan\nx = math.sqrt(16)  # inline\n    \nprint(x)"
    assert code_lines(code) == 3
    t = one_call(code=code)
    t.unexecuted_blocks = ["# only a comment\ny = 2\nprint(y)"]
    assert traj_stats(t, TORL).code_lines == 5


def test_written_vs_executed_and_blocks_cut_by_the_call_limit():
    after = "Again " + BLOCK.format("print(5)") + BLOCK.format("print(6)") + "\\boxed{2}"
    t = make_traj([("model", BLOCK.format("print(4)")), ("observation", "```output\n4\n```\n"), ("model", after)],
                  [ExecKind.OK], unexecuted=["print(5)", "print(6)"])
    s = traj_stats(t, TORL, max_calls=1)
    assert (s.executed, s.unexecuted, s.written, s.hit_limit) == (1, 2, 3, True)
    assert s.before_answer == 3
    m = compute([s, traj_stats(one_call(), TORL, max_calls=1),
                 traj_stats(make_traj([("model", "\\boxed{3}")], unexecuted=[]), TORL, max_calls=1)])
    assert m["blocks_written"] == pytest.approx(4 / 3) and m["blocks_executed"] == pytest.approx(2 / 3)
    assert m["executed_share"] == pytest.approx(2 / 4)
    assert m["unexecuted_by_limit"] == 2
    assert m["code_ratio_written"] == pytest.approx(2 / 3) and m["code_ratio_executed"] == pytest.approx(2 / 3)
    assert m["hit_limit_share"] == pytest.approx(2 / 3)
    assert m["calls_hist"] == {0: 1, 1: 2}


def test_code_written_after_the_answer_is_not_before_it():
    text = BLOCK.format("print(1)") + "\\boxed{1}\nVerify: " + BLOCK.format("print(1 == 1)")
    t = make_traj([("model", text)], unexecuted=["print(1)", "print(1 == 1)"])
    assert traj_stats(t, TORL).before_answer == 1
    assert traj_stats(make_traj([("model", BLOCK.format("x=1"))], unexecuted=["x=1"]), TORL).before_answer is None
    retool = make_traj([("model", "<code>\n```python\nprint(7)\n```\n</code><answer>\\boxed{7}</answer>")],
                       unexecuted=["print(7)"])
    assert traj_stats(retool, RETOOL).before_answer == 1


def test_older_rollouts_without_the_field_leave_written_metrics_absent():
    s = traj_stats(make_traj([("model", "x")], unexecuted=None), TORL)
    assert s.unexecuted is None and s.written is None
    m = compute([s, traj_stats(one_call(), TORL)])
    assert m["code_ratio_written"] is None and m["executed_share"] is None and m["blocks_written"] is None
    assert m["code_ratio_executed"] == 0.5  # still known from the calls


def test_pass_rates_overall_by_correctness_and_last_call():
    fixed = make_traj([("model", BLOCK.format("print(x)")), ("observation", "NameError"),
                       ("model", BLOCK.format("x=1\nprint(x)")), ("observation", "1"), ("model", "\\boxed{1}")],
                      [ExecKind.ERROR, ExecKind.OK], correct=True, unexecuted=[])
    broke = make_traj([("model", BLOCK.format("print(1)")), ("observation", "1"),
                       ("model", BLOCK.format("1/0")), ("observation", "ZeroDivisionError"),
                       ("model", BLOCK.format("print(2)")), ("observation", "SandboxError"), ("model", "\\boxed{3}")],
                      [ExecKind.OK, ExecKind.TIMEOUT, ExecKind.INFRA], correct=False, unexecuted=[])
    m = compute([traj_stats(fixed, TORL), traj_stats(broke, TORL)])
    assert m["pass_rate"] == pytest.approx(2 / 4)  # the infrastructure failure is not the model's: left out
    assert m["pass_rate_correct"] == pytest.approx(1 / 2) and m["pass_rate_incorrect"] == pytest.approx(1 / 2)
    assert m["last_pass_rate_correct"] == 1.0 and m["last_pass_rate_incorrect"] == 0.0
    assert m["calls_per_correct"] == 2.0 and m["accuracy"] == 0.5


def test_self_correction_share_accuracy_and_cases():
    fixed_right = make_traj([("model", BLOCK.format("a")), ("observation", "e"), ("model", BLOCK.format("b")),
                             ("observation", "o"), ("model", "\\boxed{1}")], [ExecKind.ERROR, ExecKind.OK],
                            correct=True, unexecuted=[])
    fixed_wrong = make_traj([("model", BLOCK.format("a")), ("observation", "e"), ("model", BLOCK.format("b")),
                             ("observation", "o"), ("model", "\\boxed{1}")], [ExecKind.RESOURCE, ExecKind.OK],
                            correct=False, unexecuted=[])
    not_fixed = make_traj([("model", BLOCK.format("a")), ("observation", "o"), ("model", BLOCK.format("b")),
                           ("observation", "e"), ("model", "\\boxed{1}")], [ExecKind.OK, ExecKind.ERROR],
                          correct=True, unexecuted=[])
    stats = [traj_stats(t, TORL) for t in (fixed_right, fixed_wrong, not_fixed, one_call())]
    assert [s.self_corrected for s in stats] == [True, True, False, False]
    m = compute(stats)
    assert m["self_correction_share"] == pytest.approx(2 / 4) and m["self_correction_acc"] == pytest.approx(1 / 2)


def test_a_run_without_code_shows_code_metrics_as_absent_not_zero():
    stats = [traj_stats(make_traj([("model", "I think \\boxed{2}")], correct=c, unexecuted=[]), TORL, max_calls=1)
             for c in (True, False)]
    m = compute(stats)
    assert m["accuracy"] == 0.5 and m["code_ratio_written"] == 0.0
    for key in ("pass_rate", "last_pass_rate", "code_lines", "timing_mean", "self_correction_share",
                "unexecuted_by_limit", "purposes", "before_answer_share", "executed_share"):
        assert m[key] is None, key


def test_cross_benchmark_average_is_unweighted_and_skips_absent_values():
    a = compute([traj_stats(one_call(correct=True), TORL)] * 3)
    b = compute([traj_stats(one_call(ExecKind.ERROR, correct=False), TORL)])
    avg = average({"a": a, "b": b})
    assert avg["accuracy"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2, not 3/4
    assert avg["n"] == 4 and avg["pass_rate"] == pytest.approx(0.5)
    assert avg["pass_rate_incorrect"] == pytest.approx(0.0)  # defined only on b


# ---------------------------------------------------------------- code purpose


@pytest.mark.parametrize("label, code", [
    ("arithmetic", "print(17 * 23)"),
    ("arithmetic", "import math\nr = math.sqrt(2) * 3\nprint(round(r, 4))"),
    ("arithmetic", "from fractions import Fraction\nprint(Fraction(3, 4) + Fraction(1, 6))"),
    ("symbolic", "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x))"),
    ("symbolic", "from sympy import simplify, sin, cos, symbols\nt = symbols('t')\nprint(simplify(sin(t)**2 + cos(t)**2))"),
    ("symbolic", "from sympy import *\nx = Symbol('x')\nprint(factor(x**3 - 1))"),
    ("enumeration", "count = 0\nfor a in range(1, 50):\n    for b in range(a, 50):\n        if a*a + b*b == 625:\n            count += 1\nprint(count)"),
    ("enumeration", "from itertools import permutations\nprint(sum(1 for p in permutations('abcd') if p[0] != 'a'))"),
    ("enumeration", "n = 1\nwhile n * n < 2000:\n    n += 1\nprint(n)"),
    ("arithmetic", "result = 1\nfor i in range(5):\n    result *= 4805\nprint(result)"),
    ("arithmetic", "print(sum(i * i for i in range(1, 11)))"),
    ("verification", "x = 4\nassert x**2 - 5*x + 4 == 0\nprint('ok')"),
    ("verification", "candidate = 391\nprint(17 * 23 == candidate)"),
    ("verification", "def check(n):\n    return n % 7 == 3\nprint(check(10))"),
    ("formatting", "print('The answer is 42')"),
    ("formatting", "name = 'x'\nprint(f'{name} = done')"),
    ("formatting", "rows = ['a', 'b']\nprint(', '.join(rows))"),
    ("other", "x = [1, 2, 3]"),
    ("other", "def f(:\n  pass"),
    ("other", "import os"),
])
def test_purpose_labels(label: str, code: str):
    assert classify_code(code) == label


# ---------------------------------------------------------------- run directories and the command


def _write(path: Path, trajs: list[Trajectory]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))


def train_dir(root: Path, max_calls: int = 1, steps: int = 2) -> Path:
    (root / "rollouts").mkdir(parents=True)
    (root / "config.yaml").write_text(f"tool:\n  format: torl\n  max_calls: {max_calls}\n")
    for step in range(1, steps + 1):
        fixer = make_traj([("model", BLOCK.format("print(y)")), ("observation", "NameError"),
                           ("model", BLOCK.format("print(2)")), ("observation", "2"), ("model", "\\boxed{2}")],
                          [ExecKind.ERROR, ExecKind.OK], correct=True, unexecuted=[], pid=f"s{step}")
        _write(root / "rollouts" / f"step_{step:06d}.jsonl", [one_call(correct=step > 1), fixer])
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "time/step_s": 10.0 * max_calls + s,
                                                            "reward/mean": 0.1 * s}) + "\n" for s in range(1, steps + 1)))
    return root


def eval_dir(root: Path, bench: str, trajs: list[Trajectory], model: str = "runs/x/checkpoints/step_000004") -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"model:\n  path: {model}\neval:\n  bench: {bench}\n")
    (root / "results.json").write_text(json.dumps({"bench": bench, "metrics": {}}))
    _write(root / "rollouts.jsonl", trajs)
    return root


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from toolrl.cli import main as cli_main

    old = sys.argv
    sys.argv = ["toolrl", "analyze", "--no-tokenizer", *args]
    try:
        with pytest.raises(SystemExit) as exc:
            cli_main.main()
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_train_run_tables_json_figures_and_page(tmp_path, capsys):
    from toolrl.analysis.figures import DPI, SIZES

    run = train_dir(tmp_path / "run")
    code, out, err = run_cli([str(run), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    (series,) = data["series"]
    assert [p["x"] for p in series["points"]] == [1, 2]
    step1 = series["points"][0]["per_bench"]["train"]
    assert step1["accuracy"] == 0.5 and step1["self_correction_share"] == 0.5 and step1["pass_rate"] == pytest.approx(2 / 3)
    cmd = series["self_correction_cases"][0]["command"]
    assert cmd == f"toolrl inspect rollout {run} --step 1 --index 1"
    assert "self-correction cases" in err and "code pass rate" in err
    saved = json.loads((run / "analysis" / "analysis.json").read_text())
    assert saved["series"][0]["summary"]["label"] == "steps 1-2"
    for name in ("torl_code_over_training", "retool_fig3_code_behaviour", "retool_fig4_self_correction",
                 "retool_fig5_code_purpose", "distributions"):
        w, h = SIZES[name]
        assert png_size(run / "analysis" / f"{name}.png") == (int(w * DPI), int(h * DPI))
    assert not (run / "analysis" / "torl_effect_of_C.png").exists()  # one value of C: nothing to compare
    page = (run / "analysis" / "analysis.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "ReTool Fig. 3" in page and 'src="http' not in page


def test_several_eval_dirs_give_benchmark_columns_and_the_average(tmp_path, capsys):
    a = eval_dir(tmp_path / "e1", "aime24", [one_call(correct=True), one_call(correct=False)])
    b = eval_dir(tmp_path / "e2", "math500", [one_call(ExecKind.ERROR, correct=False)] * 3)
    code, out, err = run_cli([str(a), str(b), "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0, err
    (series,) = json.loads(out)["series"]
    summ = series["summary"]
    assert set(summ["per_bench"]) == {"aime24", "math500"} and summ["label"] == "all"
    assert summ["average"]["accuracy"] == pytest.approx(0.25)  # (0.5 + 0.0) / 2
    assert series["points"][0]["x"] == 4  # the checkpoint named by the model path
    assert "avg" in err and (tmp_path / "o" / "analysis.html").is_file()


def test_sweep_gives_one_series_per_run_and_the_effect_of_c(tmp_path, capsys):
    sweep = tmp_path / "sw"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: sw\n")
    train_dir(sweep / "runs" / "max_calls=1", max_calls=1)
    train_dir(sweep / "runs" / "max_calls=2", max_calls=2)
    eval_dir(sweep / "runs" / "max_calls=2" / "eval" / "aime24", "aime24", [one_call(correct=True)])
    eval_dir(sweep / "runs" / "max_calls=2" / "eval" / "math500", "math500", [one_call(correct=False)])
    (sweep / "runs" / "pending").mkdir()
    code, out, err = run_cli([str(sweep), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [s["name"] for s in data["series"]] == ["sw/max_calls=1", "sw/max_calls=2", "sw/max_calls=2 · eval"]
    final_eval = data["series"][2]["summary"]
    assert set(final_eval["per_bench"]) == {"aime24", "math500"} and final_eval["average"]["accuracy"] == 0.5
    assert any("no rollouts yet" in n for n in data["notes"])
    assert "3 series" in err and "sw/max_calls=2" in err  # one column per run
    assert png_size(sweep / "analysis" / "torl_effect_of_C.png")[0] == 1500


def test_compare_two_runs_side_by_side(tmp_path, capsys):
    a = eval_dir(tmp_path / "sft", "arith", [one_call(correct=True)] * 2, model="sft")
    b = eval_dir(tmp_path / "zero", "arith", [make_traj([("model", "\\boxed{1}")], correct=False, unexecuted=[])],
                 model="zero")
    code, out, err = run_cli(["--compare", str(a), str(b), "--out", str(tmp_path / "c"), "--no-figures"], capsys)
    assert code == 0, err
    assert "B - A" in err and "-100.0 pt" in err  # accuracy and code ratio both drop from 100% to 0%
    assert not list((tmp_path / "c").glob("*.png")) and (tmp_path / "c" / "analysis.json").is_file()


@pytest.mark.parametrize("setup, message", [
    (lambda d: d.mkdir(), "no rollouts in"),
    (lambda d: _bad_file(d, '{"problem": {"id": "x", "problem": "q", "answer": "1"}}\n'), "not a saved trajectory"),
    (lambda d: _bad_file(d, ""), "rollouts of"),
])
def test_bad_input_is_one_error_line_with_a_hint(tmp_path, capsys, setup, message):
    d = tmp_path / "bad"
    setup(d)
    code, _, err = run_cli([str(d)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith("error:") and message in lines[0] and lines[1].startswith("hint:")


def _bad_file(d: Path, text: str) -> None:
    d.mkdir()
    (d / "rollouts.jsonl").write_text(text)


def test_old_rollouts_and_runs_without_code_get_notes_and_dashes(tmp_path, capsys):
    old = one_call().to_dict()
    del old["unexecuted_blocks"]
    nocode = make_traj([("model", "\\boxed{1}")], unexecuted=[]).to_dict()
    d = tmp_path / "old"
    d.mkdir()
    (d / "rollouts.jsonl").write_text(json.dumps(old) + "\n")
    e = tmp_path / "nocode"
    e.mkdir()
    (e / "rollouts.jsonl").write_text(json.dumps(nocode) + "\n")
    code, out, err = run_cli(["--compare", str(d), str(e), "--no-figures", "--json", "--out", str(tmp_path / "o")],
                             capsys)
    assert code == 0, err
    notes = json.loads(out)["notes"]
    assert any("saved before toolrl recorded unexecuted" in n for n in notes)
    assert any("no response contains a code block" in n for n in notes)
    a, b = (s["summary"]["per_bench"] for s in json.loads(out)["series"])
    assert a["old"]["code_ratio_written"] is None and a["old"]["code_ratio_executed"] == 1.0
    assert b["nocode"]["pass_rate"] is None


# ---------------------------------------------------------------- the average column of `toolrl sweep summary`


def test_sweep_summary_has_the_cross_benchmark_average_column():
    from toolrl.sweep.report import short_name
    from toolrl.sweep.summary import AVG_KEY, RunData, columns, run_metrics, summarize

    two = [{"step": 3, "eval/aime24/acc": 0.2, "eval/math500/pass@1": 0.6, "code/share": 0.5}]
    one = [{"step": 3, "eval/aime24/acc": 0.3}]
    assert run_metrics(RunData("r", "p", {}, 0, "finished", two))[AVG_KEY] == pytest.approx(0.4)
    assert AVG_KEY not in run_metrics(RunData("r", "p", {}, 0, "finished", one))
    points = summarize([RunData("a", "p", {}, 0, "finished", two), RunData("b", "p", {}, 1, "finished", two)])
    assert columns(points)[:3] == ["eval/aime24/acc", "eval/math500/pass@1", AVG_KEY]
    assert points[0].metrics[AVG_KEY].mean == pytest.approx(0.4) and short_name(AVG_KEY) == "avg acc"


def test_pure_analysis_modules_import_no_engine_or_plotting():
    import subprocess

    code = ("import sys, toolrl.analysis.analyze, toolrl.analysis.tables, toolrl.analysis.llm_labels;"
            "bad = [m for m in ('vllm', 'deepspeed', 'wandb', 'torch', 'transformers', 'matplotlib') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_long_runs_show_every_kth_step_and_the_last():
    from toolrl.analysis.tables import curve_table

    m = compute([traj_stats(one_call(), TORL)])
    series = {"name": "r", "x_label": "step", "points": [{"x": i, "per_bench": {"train": m}, "average": None}
                                                          for i in range(1, 101)]}
    title, header, rows = curve_table(series, max_rows=25)
    assert [r[0] for r in rows][:3] == ["1", "5", "9"] and rows[-1][0] == "100" and "every 4th step" in title
    assert header[1:3] == ["n", "acc"] and rows[0][2] == "100.0%"


def test_eval_dirs_of_several_checkpoints_make_curves_in_step_order(tmp_path, capsys):
    dirs = []
    for step, acc in ((8, True), (4, False)):
        for bench in ("aime24", "math500"):
            dirs.append(eval_dir(tmp_path / f"s{step}-{bench}", bench, [one_call(correct=acc)],
                                 model=f"runs/r/checkpoints/step_{step:06d}"))
    code, out, err = run_cli([*map(str, dirs), "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0, err
    (series,) = json.loads(out)["series"]
    assert [p["x"] for p in series["points"]] == [4, 8]
    assert [p["average"]["accuracy"] for p in series["points"]] == [0.0, 1.0]
    assert series["summary"]["label"] == "checkpoint 8" and set(series["summary"]["per_bench"]) == {"aime24", "math500"}
    assert "per checkpoint (average over benchmarks)" in err
