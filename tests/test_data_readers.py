"""Readers for every format (verl parquet, JSONL, JSON, save_to_disk, the Hub cache through `datasets`), column
mapping, repeated rows, chat SFT files, stats, overlap and conversion, on fixtures the tests build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_support.verl import SYSTEM, torl_validation_rows, write_torl_parquet

from toolrl.config import load_config
from toolrl.data.answer_types import TYPES, answer_type, count_types
from toolrl.data.columns import ColumnOverrides, detect_columns
from toolrl.data.readers import is_hub_id, read_rows, to_problems
from toolrl.errors import DataError
from toolrl.eval.benchmarks import load_benchmark, load_problems, load_train_problems


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=600)


@pytest.fixture()
def torl_parquet(data_dir: Path, tmp_path: Path) -> Path:
    return write_torl_parquet(data_dir, tmp_path / "torl_test.parquet")


def test_verl_parquet_maps_and_merges_repeats(torl_parquet: Path, data_dir: Path) -> None:
    pset = load_benchmark(str(torl_parquet), load_config())
    assert pset.rows == 374 and len(pset.problems) == 30 + 30 + 134
    assert pset.repeats.lines() == ["aime24: 30 unique problems x4", "aime25: 30 unique problems x4",
                                    "math500: 134 unique problems"]
    assert pset.columns.answer == "reward_model.ground_truth" and pset.columns.messages == "prompt"
    local = {p.problem: p.answer for p in load_problems("aime24", load_config(overrides=[f"data.dir={data_dir}"]))}
    aime = [p for p in pset.problems if p.meta["data_source"] == "aime24"]
    assert {p.problem: p.answer for p in aime} == local  # the user turn is the problem, the ground truth the answer
    assert all(p.meta["repeats"] == 4 for p in aime)
    assert aime[0].meta["prompt_messages"][0] == {"role": "system", "content": SYSTEM}
    assert len({p.id for p in pset.problems}) == len(pset.problems)
    # limit applies per data_source, so a small evaluation still covers every benchmark of the file
    small = load_benchmark(str(torl_parquet), load_config(), limit=2).problems
    assert [p.meta["data_source"] for p in small] == ["aime24"] * 2 + ["aime25"] * 2 + ["math500"] * 2


def test_verl_prompt_used_as_written_only_with_template_dataset(torl_parquet: Path, tokenizer) -> None:
    from toolrl.rollout.prompts import render_prompt

    p = load_problems(str(torl_parquet), load_config(), limit=1)[0]
    as_written = render_prompt(p, load_config(overrides=["prompt.template=dataset"]), tokenizer)
    assert SYSTEM in as_written and p.problem in as_written
    ours = render_prompt(p, load_config(), tokenizer)
    assert SYSTEM not in ours and p.problem in ours  # otherwise: the user turn is the problem in toolrl's prompt
    with pytest.raises(Exception, match="chat template"):
        render_prompt(p, load_config(overrides=["prompt.template=dataset"]), type("T", (), {"chat_template": None})())


def test_train_set_from_parquet(torl_parquet: Path) -> None:
    cfg = load_config(overrides=[f"data.train={torl_parquet}"])
    assert len(load_train_problems(cfg)) == 194


def test_json_and_jsonl_with_hub_style_columns(tmp_path: Path) -> None:
    rows = [{"question": "What is 1+1?", "solution": "Add: $1+1=\\boxed{2}$.", "level": "1"},
            {"question": "Half of 1?", "solution": "It is \\boxed{\\frac{1}{2}}."}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    _jsonl(tmp_path / "c.jsonl", rows)
    for name in ("a.json", "b.json", "c.jsonl"):
        ps = load_problems(str(tmp_path / name), load_config())
        assert [(p.problem, p.answer) for p in ps] == [("What is 1+1?", "2"), ("Half of 1?", "\\frac{1}{2}")]
        assert ps[0].id.endswith("-0") and ps[0].meta["level"] == "1"


def test_column_overrides_by_config(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "odd.jsonl", [{"q": {"text": "2+2?"}, "gt": 4, "key": "k1"},
                                        {"q": {"text": "3+3?"}, "gt": 6.0, "key": "k2"}])
    with pytest.raises(DataError) as e:
        load_problems(str(f), load_config())
    assert "q.text" in e.value.message and "data.problem_key" in (e.value.hint or "")
    cfg = load_config(overrides=["data.problem_key=q.text", "data.answer_key=gt", "data.id_key=key"])
    ps = load_problems(str(f), cfg)
    assert [(p.id, p.problem, p.answer) for p in ps] == [("k1", "2+2?", "4"), ("k2", "3+3?", "6")]


def test_detection_prefers_explicit_answers_over_solutions() -> None:
    cmap = detect_columns([{"problem": "p", "answer": "1", "solution": "long \\boxed{1}"}])
    assert (cmap.answer, cmap.solution, cmap.answer_from_text) == ("answer", "solution", False)
    assert detect_columns([{"problem": "p", "answer": "1"}], ColumnOverrides(answer="x")).answer == "x"


def test_repeats_in_jsonl_are_recognised_and_conflicting_ids_refused(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "r.jsonl", [{"id": "a", "problem": "p", "answer": "1"}, {"id": "b", "problem": "q", "answer": "2"},
                                      {"id": "a", "problem": "p", "answer": "1"}, {"id": "c", "problem": "p ", "answer": "1"}])
    pset = load_benchmark(str(f), load_config())
    assert [p.id for p in pset.problems] == ["a", "b"] and pset.problems[0].meta["repeats"] == 3
    assert pset.repeats.lines() == ["2 unique problems in 4 rows (1 repeated, up to x3)"]


def test_save_to_disk_directory(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(5)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:2])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_problems(str(tmp_path / "single"), load_config())) == 5
    assert len(load_problems(str(tmp_path / "dd"), load_config())) == 2  # eval: the test split
    assert len(load_train_problems(load_config(overrides=[f"data.train={tmp_path / 'dd'}"]))) == 5  # train split
    assert len(load_problems(str(tmp_path / "dd"), load_config(overrides=["data.split=train"]))) == 5


def _hub_cache(cache: Path, repo: str, splits: dict[str, list[dict]], tmp: Path) -> None:
    """The datasets cache a user has after `load_dataset(repo)` online: <cache>/<org>___<name>/default/0.0.0/<hash>/."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    org, name = repo.split("/")
    files = {}
    for split, rows in splits.items():
        files[split] = str(tmp / f"{split}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), files[split])
    builder = Parquet(cache_dir=str(tmp / "build"), dataset_name=name, config_name="default", data_files=files, hash="0123abcd")
    builder.download_and_prepare()
    [config_dir] = (tmp / "build" / name).iterdir()
    (cache / f"{org}___{name}").mkdir(parents=True)
    shutil.move(str(config_dir), str(cache / f"{org}___{name}" / "default"))


def test_hub_id_loads_offline_from_the_datasets_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hf-datasets"
    train = [{"question": f"[{i}] 2*{i}?", "final_answer": [str(2 * i)], "uid": f"u{i}"} for i in range(6)]
    test = [{"question": "1+2?", "final_answer": ["3"], "uid": "t0"}] * 3
    _hub_cache(cache, "acme/mathset", {"train": train, "test": test}, tmp_path)
    env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    res = _cli("data", "stats", "acme/mathset@train", "--no-lengths", "--json", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    st = json.loads(res.stdout)
    assert (st["rows"], st["unique"], st["columns"]["answer"], st["columns"]["id"]) == (6, 6, "final_answer", "uid")
    res = _cli("data", "stats", "acme/mathset", "--no-lengths", "--json", cwd=tmp_path, env=env)  # eval default: test
    assert res.returncode == 0, res.stderr[-2000:]
    assert (json.loads(res.stdout)["rows"], json.loads(res.stdout)["unique"]) == (3, 1)
    res = _cli("data", "stats", "acme/other", "--no-lengths", cwd=tmp_path, env=env)
    assert res.returncode == 2 and "error: Hugging Face dataset 'acme/other' could not be loaded" in res.stderr


def test_hub_id_syntax() -> None:
    assert is_hub_id("org/name:cfg@test") and not is_hub_id("runs/x.jsonl") and not is_hub_id("aime24")
    with pytest.raises(DataError, match="not found"):
        read_rows("missing/file.parquet")


def test_chat_sft_file_formats_mask_interpreter_output(tmp_path: Path, tokenizer) -> None:
    from toolrl.train.sft_data import load_sft_file

    answer = ("Compute it.\n<code>\n```python\nprint(6*7)\n```\n</code>\n<interpreter>\n42\n</interpreter>\n"
              "<answer>\\boxed{42}</answer>")
    msgs = [{"role": "user", "content": "What is 6*7?"}, {"role": "assistant", "content": answer}]
    _jsonl(tmp_path / "sft.jsonl", [{"messages": msgs}])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"messages": msgs}]), tmp_path / "sft.parquet")
    share = [{"conversations": [{"from": "human", "value": "What is 6*7?"}, {"from": "gpt", "value": answer}]}]
    (tmp_path / "sft.json").write_text(json.dumps(share))
    results = [load_sft_file(tmp_path / n, tokenizer, "torl") for n in ("sft.jsonl", "sft.parquet", "sft.json")]
    assert results[0] == results[1] == results[2]
    ids, mask = results[0][0]
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m and t != tokenizer.eos_token_id]) == answer.replace(
        "\n<interpreter>\n42\n</interpreter>\n", "")
    masked = tokenizer.decode([t for t, m in zip(ids, mask) if not m])  # the prompt, then the observation
    assert masked.endswith("\n<interpreter>\n42\n</interpreter>\n") and "What is 6*7?" in masked
    _jsonl(tmp_path / "bad.jsonl", [{"text": "no messages here"}])
    with pytest.raises(DataError, match="neither a trajectory nor a chat example"):
        load_sft_file(tmp_path / "bad.jsonl", tokenizer, "retool")
    assert load_sft_file(tmp_path / "bad.jsonl".replace("bad", "sft"), tokenizer, "retool", messages_key="messages")


def test_answer_types() -> None:
    cases = {"204": "integer", "-12": "integer", "\\dfrac{7}{3}": "fraction", "0.5": "fraction",
             "(-\\infty, 2) \\cup (3, \\infty)": "interval", "[0,1]": "interval", "2\\sqrt{3}": "expression",
             "\\pi": "expression", "x^2 - 1": "expression", "\\text{(C)}": "other", "(1, 2)": "other", "": "other"}
    assert {a: answer_type(a) for a in cases} == cases
    counts = count_types(cases)
    assert tuple(counts) == TYPES and sum(counts.values()) == len(cases)


def test_stats_cli_reports_repeats_and_prompt_lengths(torl_parquet: Path, tmp_path: Path, tokenizer) -> None:
    from toolrl.rollout.prompts import encode_prompt

    res = _cli("data", "stats", str(torl_parquet), "--json", "--budget", "100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    st = json.loads(res.stdout)
    assert st["rows"] == 374 and st["unique"] == 194 and st["duplicate_rows"] == 180
    assert st["sources"] == {"aime24": 30, "aime25": 30, "math500": 134}
    assert "aime24: 30 unique problems x4" in st["repeats"]
    assert st["answer_types"]["integer"] >= 60 and sum(st["answer_types"].values()) == 194
    cfg = load_config()
    lengths = [len(encode_prompt(p, cfg, tokenizer)[1]) for p in load_problems(str(torl_parquet), cfg)]
    assert st["lengths"]["over_budget"] == sum(x > 100 for x in lengths) > 0
    assert st["lengths"]["max"] == max(lengths)
    assert sum(c for _, _, c in st["histogram"]) == 194
    human = _cli("data", "stats", str(torl_parquet), "--no-lengths", cwd=tmp_path)
    assert "aime24: 30 unique problems x4" in human.stdout and "integer" in human.stdout


def test_overlap_finds_planted_duplicate_but_no_exact_overlap_in_shared_train(data_dir: Path, tmp_path: Path) -> None:
    res = _cli("data", "overlap", "train", "aime24", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    clean = json.loads(res.stdout)["benches"]["aime24"]
    assert clean["exact"] == 0 and clean["problems"] == 30

    aime = [json.loads(x) for x in (data_dir / "aime24.jsonl").read_text().splitlines()]
    planted = {"id": "planted", "problem": "  " + aime[4]["problem"].upper() + " ", "answer": aime[4]["answer"]}
    half = aime[7]["problem"].split()
    partial = {"id": "partial", "problem": "Unrelated opening words here. " + " ".join(half[: len(half) // 2]), "answer": "1"}
    train = _jsonl(tmp_path / "train.jsonl", [{"id": "t0", "problem": "What is 1+1?", "answer": "2"}, planted, partial])
    res = _cli("data", "overlap", str(train), "aime24", "--json", cwd=tmp_path)
    found = json.loads(res.stdout)["benches"]["aime24"]
    pairs = {(p["eval_id"], p["train_id"]): p for p in found["pairs"]}
    assert pairs[(aime[4]["id"], "planted")]["exact"] and pairs[(aime[4]["id"], "planted")]["share"] == 1.0
    assert not pairs[(aime[7]["id"], "partial")]["exact"] and 0 < pairs[(aime[7]["id"], "partial")]["share"] < 1
    assert found["exact"] == 1 and found["pairs"][0]["train_id"] == "planted"  # identical texts listed first
    human = _cli("data", "overlap", str(train), "aime24", cwd=tmp_path)
    assert "planted" in human.stdout and "1 identical" in human.stdout


def test_convert_round_trip_and_verl_layout(tmp_path: Path, data_dir: Path) -> None:
    import pyarrow.parquet as pq

    src = data_dir / "amc23.jsonl"
    pq_path, back = tmp_path / "amc.parquet", tmp_path / "amc.jsonl"
    res = _cli("data", "convert", str(src), str(pq_path), "--source", "amc23", cwd=tmp_path)
    assert res.returncode == 0 and "wrote 40 problems" in res.stderr, res.stderr
    rows = pq.read_table(pq_path).to_pylist()
    assert set(rows[0]) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert rows[0]["data_source"] == "amc23" and rows[0]["prompt"][-1]["role"] == "user"
    assert _cli("data", "convert", str(pq_path), str(back), cwd=tmp_path).returncode == 0
    orig = load_problems(str(src), load_config())
    again = load_problems(str(back), load_config())
    assert [(p.id, p.problem, p.answer) for p in again] == [(p.id, p.problem, p.answer) for p in orig]
    # the converted parquet is itself a verl file toolrl reads, with its own prompt under prompt.template=dataset
    via = load_problems(str(pq_path), load_config())
    assert [(p.problem, p.answer) for p in via] == [(p.problem, p.answer) for p in orig]
    res = _cli("data", "convert", str(src), str(tmp_path / "x.csv"), cwd=tmp_path)
    assert res.returncode == 2 and "error:" in res.stderr
    # SFT rows (chat messages) are copied as they are, both ways
    sft = [{"id": "s1", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "calls": 1}]
    _jsonl(tmp_path / "sft.jsonl", sft)
    res = _cli("data", "convert", str(tmp_path / "sft.jsonl"), str(tmp_path / "sft.parquet"), cwd=tmp_path)
    assert res.returncode == 0 and "wrote 1 SFT rows" in res.stderr, res.stderr
    assert read_rows(str(tmp_path / "sft.parquet")).rows == sft


def test_verl_rows_fixture_is_torl_shaped(data_dir: Path) -> None:
    rows = torl_validation_rows(data_dir)
    assert len(rows) == 374 and len({r["extra_info"]["id"] for r in rows}) == 374
    assert to_problems(type("R", (), {"name": "x", "rows": rows, "where": [str(i) for i in range(374)]})()).rows == 374


def test_data_modules_import_no_heavy_library() -> None:
    code = ("import sys, toolrl.data, toolrl.data.stats, toolrl.data.overlap, toolrl.data.sft_trace, "
            "toolrl.data.build_sft, toolrl.data.convert, toolrl.cli.data_cmd\n"
            "bad = [m for m in ('vllm', 'deepspeed', 'wandb', 'torch', 'transformers', 'datasets', 'pyarrow', 'openai',"
            " 'math_verify') if m in sys.modules]; print(bad); assert not bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ids_numbered_per_source_are_qualified(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"data_source": src, "prompt": [{"role": "user", "content": f"{src} q{i}"}],
             "reward_model": {"ground_truth": str(i)}, "extra_info": {"index": i}} for src in ("a", "b") for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mix.parquet")
    ids = [p.id for p in load_problems(str(tmp_path / "mix.parquet"), load_config())]
    assert ids == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    cfg = load_config(overrides=[f"data.train={tmp_path / 'mix.parquet'}", "eval.bench=org/name:cfg@test"])
    assert len(load_train_problems(cfg)) == 6 and cfg.eval.bench == "org/name:cfg@test"
