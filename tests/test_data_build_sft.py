"""`toolrl data build-sft`: the pure trace checks, then the whole pipeline against a scripted OpenAI-compatible
teacher (driven by the real `openai` client) with the real local sandbox and grader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_support.scripted import twenty_rows
from data_support.teacher_server import ScriptedTeacher

from toolrl.config import load_config
from toolrl.data.sft_trace import (CODE_ERROR, MALFORMED, NO_ANSWER, NO_CODE, WRONG, build_trace, check_structure,
                                   split_teacher_text)
from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind

REPO = Path(__file__).resolve().parents[1]


def _fake_run(outputs: dict[str, str]):
    """A stand-in interpreter for the pure tests: known code -> its stdout; anything else raises."""
    def run(code: str) -> ExecResult:
        if code in outputs:
            return ExecResult(kind=ExecKind.OK, stdout=outputs[code] + "\n")
        return ExecResult(kind=ExecKind.ERROR, error_line="NameError: name 'y' is not defined", stderr="NameError")
    return run


RETOOL = load_config(overrides=["tool.format=retool"]).tool
TORL = load_config(overrides=["tool.format=torl"]).tool


def _grade(gold: str):
    from toolrl.reward import grade_answer
    return lambda text: grade_answer(text, gold, "retool")


def test_claimed_output_is_replaced_by_the_real_one() -> None:
    teacher = ("Multiply.\n<code>\n```python\nprint(17*23)\n```\n</code>\n<interpreter>\n400\n</interpreter>\n"
               "So <answer>\\boxed{391}</answer>")
    v = build_trace(teacher, RETOOL, _fake_run({"print(17*23)": "391"}), _grade("391"))
    assert v.reason is None
    assert "400" not in v.trace.text and "<interpreter>\n391\n</interpreter>" in v.trace.text
    assert v.trace.claimed_replaced == 1 and len(v.trace.results) == 1
    # the observation sits exactly where a rollout would put it: right after </code>
    assert v.trace.text.index("</code>\n<interpreter>") > 0
    assert check_structure(v.trace.text, "retool") is None


def test_missing_interpreter_blocks_are_inserted_in_order() -> None:
    teacher = ("<code>print(2)</code>\nthen\n<code>\n```python\nprint(3)\n```\n</code>\nSo <answer>\\boxed{5}</answer>")
    v = build_trace(teacher, RETOOL, _fake_run({"print(2)": "2", "print(3)": "3"}), _grade("5"))
    assert v.reason is None and v.trace.claimed_replaced == 0
    text = v.trace.text
    assert text.index("<interpreter>\n2\n") < text.index("then") < text.index("<interpreter>\n3\n")


@pytest.mark.parametrize(("teacher", "reason"), [
    ("<code>print(1)\n<answer>\\boxed{1}</answer>", MALFORMED),  # unclosed <code>
    ("<interpreter>1</interpreter> so <answer>\\boxed{1}</answer>", MALFORMED),  # output without code
    ("<code>print(1)</code><code>print(1)</code></code><answer>\\boxed{1}</answer>", MALFORMED),
    ("It is 1, so <answer>\\boxed{1}</answer>", NO_CODE),
    ("<code>print(1)</code> and I am done.", NO_ANSWER),
    ("<answer>\\boxed{1}</answer> <code>print(1)</code>", NO_ANSWER),  # the answer must come after the code
    ("<code>print(1)</code> so <answer>\\boxed{2}</answer>", WRONG),
])
def test_drop_reasons(teacher: str, reason: str) -> None:
    v = build_trace(teacher, RETOOL, _fake_run({"print(1)": "1"}), _grade("1"))
    assert v.reason == reason, v


def test_failing_block_is_kept_unless_every_block_must_run() -> None:
    teacher = "<code>print(y)</code>\nThus <answer>\\boxed{1}</answer>"
    assert build_trace(teacher, RETOOL, _fake_run({}), _grade("1")).reason is None
    v = build_trace(teacher, RETOOL, _fake_run({}), _grade("1"), require_success=True)
    assert v.reason == CODE_ERROR and "NameError" in v.detail


def test_torl_format() -> None:
    teacher = "Compute.\n```python\nprint(6*7)\n```\n```output\n41\n```\nSo \\boxed{42}."
    v = build_trace(teacher, TORL, _fake_run({"print(6*7)": "42"}),
                    lambda t: __import__("toolrl.reward", fromlist=["x"]).grade_answer(t, "42", "torl"))
    assert v.reason is None
    assert v.trace.text == "Compute.\n```python\nprint(6*7)\n```\n```output\n42\n```\nSo \\boxed{42}."
    assert split_teacher_text("```python\nprint(1)\n", "torl") == "unclosed ``` fence"


# -- the pipeline against a scripted OpenAI-compatible server (rows: data_support.scripted) ---------------------


def _cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_build_sft_twenty_rows_against_openai_compatible_server(tmp_path: Path, tokenizer) -> None:
    rows, answers, fate = twenty_rows()
    src = tmp_path / "solutions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft.jsonl"
    with ScriptedTeacher(answers, cut=frozenset({"P18"})) as server:  # P18's unclosed <code>: cut by max_tokens
        res = _cli("data", "build-sft", str(src), "-o", str(out), "--base-url", server.base_url, "--json",
                   "--concurrency", "4", "--set", "tool.format=retool", "--set", "sandbox.pool_size=2", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        assert sorted(server.requests) == sorted(fate)  # one request per row
    report = json.loads(res.stdout)
    expected_kept = sum(v == "kept" for v in fate.values())
    assert report["run"] == {"kept": expected_kept, "wrong_answer": 2, "malformed_tags": 2}
    assert report["total_kept"] == expected_kept and report["total_dropped"] == {"wrong_answer": 2, "malformed_tags": 2}
    assert report["replaced_outputs"] == 12 + 2 + 2 + 1  # every claimed output, right or wrong (P16-17 too)
    assert "kept" in res.stderr and "wrong_answer" in res.stderr  # the drop report table

    kept = {r["id"]: r for r in _jsonl(out)}
    tag_of = {r["id"]: r["question"][1:4] for r in rows}
    assert {tag_of[i] for i in kept} == {t for t, f in fate.items() if f == "kept"}
    for rid, row in kept.items():
        a, b = (int(x) for x in row["messages"][0]["content"].split("What is ")[1].rstrip("?").split(" times "))
        text = row["messages"][-1]["content"]
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][0]["role"] == "user"
        if tag_of[rid] == "P20":
            assert row["call_kinds"] == ["error"] and "NameError" in text and f"<interpreter>\n{a * b}\n" not in text
        else:
            assert f"<interpreter>\n{a * b}\n</interpreter>" in text  # the real output
            assert f"<interpreter>\n{a * b + 1}\n" not in text  # never the teacher's claim
            assert set(row["call_kinds"]) == {"ok"}
    assert kept["row-15"]["calls"] == 2
    drops = {d["id"]: d for d in _jsonl(tmp_path / "sft.drops.jsonl")}
    assert {tag_of[i]: d["reason"] for i, d in drops.items()} == {t: f for t, f in fate.items() if f != "kept"}
    assert all(d["teacher_text"] for d in drops.values())
    assert [tag_of[i] for i, d in drops.items() if d["truncated"]] == ["P18"] and "--max-tokens" in drops["row-18"]["detail"]

    # sft.data reads the file directly; interpreter output is masked, the rest of the assistant turn is trained on
    from toolrl.train.sft_data import load_sft_file

    examples = load_sft_file(out, tokenizer, "torl")  # masking follows the file's own tags, whatever tool.format is
    assert len(examples) == expected_kept
    ids, mask = examples[0]
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    masked_obs = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "<code>" in trained and "<answer>" in trained and "<interpreter>" not in trained
    assert "<interpreter>" in masked_obs

    # a second run has nothing left to do
    with ScriptedTeacher(answers) as server:
        res = _cli("data", "build-sft", str(src), "-o", str(out), "--base-url", server.base_url, "--json",
                   "--set", "tool.format=retool", "--set", "sandbox.pool_size=2", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert server.requests == []
    again = json.loads(res.stdout)
    assert again["skipped_done"] == 20 and again["run"] == {} and again["total_kept"] == expected_kept


def test_server_error_mid_run_resumes_cleanly(tmp_path: Path) -> None:
    from toolrl.data.build_sft import SFTBuilder, BuildOptions, load_template
    from toolrl.data.readers import load_problem_set
    from toolrl.data.teachers import OpenAITeacher
    from toolrl.sandbox import build_sandbox

    rows, answers, fate = twenty_rows()
    src = tmp_path / "solutions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    cfg = load_config(overrides=["tool.format=retool", "sandbox.pool_size=1"])
    pset = load_problem_set(str(src), cfg.data, "train")
    work = [(p, p.meta["solution"]) for p in pset.problems]
    out = tmp_path / "sft.jsonl"
    sandbox = build_sandbox(cfg)
    try:
        with ScriptedTeacher(answers) as server:
            server.fail_after = 3  # the server goes down after three answers
            teacher = OpenAITeacher(server.base_url, max_retries=0)
            first = SFTBuilder(cfg, teacher, sandbox, load_template(None, "retool"), out, BuildOptions(concurrency=1)).run(work)
            assert first.run == {"kept": 3, "teacher_error": 5} and first.retry == {"teacher_error": 5}
            assert len(_jsonl(out)) == 3 and not (tmp_path / "sft.drops.jsonl").exists()  # failures are not "done"
            # an interrupted write leaves a torn last line: it is cut off, and that row is redone
            with out.open("a") as f:
                f.write('{"id": "row-04", "messa')
            server.fail, server.fail_after, server.requests = False, None, []
            second = SFTBuilder(cfg, teacher, sandbox, load_template(None, "retool"), out, BuildOptions(concurrency=2)).run(work)
            teacher.close()
            assert sorted(server.requests) == [f"P{i:02d}" for i in range(4, 9)]  # only what was not done
    finally:
        sandbox.close()
    assert second.skipped_done == 3 and second.run == {"kept": 5} and second.retry == {}
    ids = [r["id"] for r in _jsonl(out)]
    assert sorted(ids) == [f"row-{i:02d}" for i in range(1, 9)]  # every row exactly once
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert report["total_kept"] == 8


def test_unreachable_endpoint_is_one_error_line(tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"problem": "1+1?", "solution": "so \\boxed{2}"}) + "\n")
    res = _cli("data", "build-sft", str(src), "-o", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
               cwd=tmp_path, timeout=300)
    assert res.returncode == 2
    assert "error: cannot reach the teacher endpoint" in res.stderr and "hint:" in res.stderr
    assert "Traceback" not in res.stderr


def test_rows_without_solution_column_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    res = _cli("data", "build-sft", str(src), "-o", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
               cwd=tmp_path, timeout=300)
    assert res.returncode == 2 and "no text-solution column" in res.stderr and "data.solution_key" in res.stderr


def test_template_must_hold_the_placeholders(tmp_path: Path) -> None:
    from toolrl.data.build_sft import load_template
    from toolrl.errors import DataError

    bad = tmp_path / "t.txt"
    bad.write_text("Rewrite {problem} please")
    with pytest.raises(DataError, match="lacks \\{solution\\}"):
        load_template(bad, "retool")
    good = tmp_path / "g.txt"
    good.write_text("P={problem} S={solution}")
    assert load_template(good, "retool") == "P={problem} S={solution}"
    assert "{problem}" in load_template(None, "torl") and "<code>" in load_template(None, "retool")


class _CountingEngine:
    """An Engine that answers each request with its own prompt (slowly), so answers can be matched to requests."""

    def __init__(self, tokenizer, fail: bool = False) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.fail = fail
        self.closed = False

    def generate(self, requests, sampling):
        import time

        from toolrl.rollout.engine import GenOutput

        time.sleep(0.2)
        if self.fail:
            raise RuntimeError("engine broke")
        return [GenOutput(token_ids=list(r.prompt_ids), finish="eos") for r in requests]

    def close(self) -> None:
        self.closed = True


def test_engine_teacher_batches_concurrent_requests(tokenizer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from toolrl.data.teachers import EngineTeacher, TeacherError

    cfg = load_config(overrides=["rollout.batch_size=8"])
    engine = _CountingEngine(tokenizer)
    teacher = EngineTeacher(cfg, engine=engine)
    questions = [f"Question number {i} ends here" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: teacher.complete([{"role": "user", "content": q}]).text, questions))
    teacher.close()
    assert engine.closed and sum(teacher.batches) == 8 and max(teacher.batches) > 1  # requests were batched
    assert all(q in a and all(o not in a for o in questions if o != q) for q, a in zip(questions, answers))
    broken = EngineTeacher(cfg, engine=_CountingEngine(tokenizer, fail=True))
    with pytest.raises(TeacherError, match="engine broke"):
        broken.complete([{"role": "user", "content": "hi"}])
    broken.close()
