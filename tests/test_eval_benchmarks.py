"""Benchmark loading: the real data files, local JSONL validation, the arithmetic task, the Hub fallback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.config import load_config
from toolrl.errors import DataError
from toolrl.eval.arith import arith_problems
from toolrl.eval.benchmarks import BENCHMARKS, load_problems, load_train_problems

SIZES = {"aime24": 30, "aime25": 30, "math500": 500, "amc23": 40, "olympiadbench": 675, "gsm8k": 1319}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_benchmarks_load_from_data_dir(name: str, data_dir: Path) -> None:
    cfg = load_config(overrides=[f"data.dir={data_dir}"])
    problems = load_problems(name, cfg)
    assert len(problems) == SIZES[name]
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.problem and p.answer for p in problems)
    assert [p.id for p in load_problems(name, cfg, limit=3)] == [p.id for p in problems[:3]]


def test_extra_fields_land_in_meta(data_dir: Path) -> None:
    cfg = load_config(overrides=[f"data.dir={data_dir}"])
    p = load_problems("math500", cfg)[0]
    assert {"level", "subject"} <= set(p.meta)


def test_data_dir_config_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"id": "x", "problem": "1+1?", "answer": 2}) + "\n")
    monkeypatch.setenv("TOOLRL_DATA_DIR", "/nonexistent")
    cfg = load_config(overrides=[f"data.dir={tmp_path}"])
    [p] = load_problems("aime24", cfg)
    assert (p.id, p.answer) == ("x", "2")  # numeric answers become strings


def test_any_jsonl_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.jsonl"
    f.write_text('{"id": "a", "problem": "p", "answer": "1", "tag": "t"}\n\n{"id": "b", "problem": "q", "answer": "2"}\n')
    problems = load_problems(str(f), load_config())
    assert [p.id for p in problems] == ["a", "b"] and problems[0].meta == {"tag": "t"}


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"id": "a", "problem": "p", "answer": "1"}\n{"id": "b", "problem": "q"}\n', r"bad\.jsonl:2: missing answer"),
        ('{"id": "a", "problem": "p", "answer": "1"}\nnot json\n', r"bad\.jsonl:2: not valid JSON"),
        ('{"id": "a", "problem": "p", "answer": "1"}\n{"id": "a", "problem": "q", "answer": "2"}\n', r":2: duplicate id"),
        ("[1, 2]\n", r"bad\.jsonl:1: expected a JSON object"),
        ("\n", r"has no problems"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, content: str, pattern: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=pattern) as e:
        load_problems(str(f), load_config())
    assert e.value.hint


def test_unknown_benchmark_lists_the_names() -> None:
    with pytest.raises(DataError, match="unknown benchmark 'aime2024'") as e:
        load_problems("aime2024", load_config())
    assert "aime24" in (e.value.hint or "") and "arith" in (e.value.hint or "")


def test_missing_file_path() -> None:
    with pytest.raises(DataError, match="not found"):
        load_problems("/nope/x.jsonl", load_config())


def test_hub_fallback_failure_points_to_data_dir(tmp_path: Path) -> None:
    """Without the file and without the Hub, the error says how to provide the data (offline: fails fast)."""
    code = (
        "from toolrl.config import load_config\n"
        "from toolrl.eval.benchmarks import load_problems\n"
        "from toolrl.errors import DataError\n"
        f"cfg = load_config(overrides=['data.dir={tmp_path}'])\n"
        "try:\n    load_problems('math500', cfg)\nexcept DataError as e:\n    print(e.message); print(e.hint)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("TOOLRL_DATA_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "HuggingFaceH4/MATH-500" in out and "data.dir" in out and "TOOLRL_DATA_DIR" in out


def test_hub_field_mappings() -> None:
    assert BENCHMARKS["gsm8k"].to_problem({"question": "q", "answer": "so\n#### 1,000"}, 7, "gsm8k").answer == "1000"
    p = BENCHMARKS["olympiadbench"].to_problem(
        {"id": 2231, "question": "q", "final_answer": ["$(1,1), (3,2)$"], "unit": None}, 0, "olympiadbench"
    )
    assert (p.id, p.answer) == ("olympiadbench-2231", "(1,1), (3,2)")
    assert BENCHMARKS["amc23"].to_problem({"id": 3, "question": "q", "answer": 27.0}, 0, "amc23").answer == "27"
    assert BENCHMARKS["aime24"].to_problem({"ID": "2024-I-1", "Problem": "q", "Answer": 204}, 0, "aime24").answer == "204"
    m = BENCHMARKS["math500"].to_problem({"unique_id": "test/x.json", "problem": "q", "answer": "\\frac12", "level": 3,
                                          "subject": "Algebra", "solution": "long"}, 0, "math500")
    assert m.meta == {"level": 3, "subject": "Algebra"}


def test_arith_is_deterministic_and_exact() -> None:
    a = arith_problems(50, digits=5, seed=3)
    assert a == arith_problems(50, digits=5, seed=3)
    assert a != arith_problems(50, digits=5, seed=4)
    for p in a:
        operands = re.findall(r"\d+", p.meta["expression"])
        assert all(len(x) == 5 for x in operands)
        assert str(eval(p.meta["expression"])) == p.answer  # noqa: S307 - our own generated arithmetic
        assert p.meta["expression"] in p.problem
    assert len({p.meta["expression"].count("*") for p in a}) > 1  # mixed operations


def test_arith_from_config_and_train_split_differs() -> None:
    cfg = load_config(overrides=["data.arith_digits=6", "data.arith_size=20"])
    test = load_problems("arith", cfg)
    train = load_train_problems(cfg)
    assert len(test) == len(train) == 20
    assert not {p.meta["expression"] for p in test} & {p.meta["expression"] for p in train}
    assert len(load_problems("arith", cfg, limit=5)) == 5


def test_train_set_from_data_dir(data_dir: Path) -> None:
    cfg = load_config(overrides=[f"data.dir={data_dir}", "data.train=train"])
    assert len(load_train_problems(cfg)) == 8115
    cfg = load_config(overrides=[f"data.dir={data_dir}", "data.train=amc23"])
    assert len(load_train_problems(cfg)) == 40


def test_train_set_needs_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLRL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="data.dir"):
        load_train_problems(load_config(overrides=["data.train=train"]))
