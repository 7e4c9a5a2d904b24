"""Sweep files: validation before anything runs, stable run names, overrides that load back to the axis values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.config import load_config
from toolrl.sweep.spec import (
    SweepSpecError,
    format_value,
    load_spec,
    parse_spec,
    sanitize,
    validate_runs,
)

REPO = Path(__file__).resolve().parents[1]


def spec_of(**raw):
    raw.setdefault("name", "t")
    raw.setdefault("axes", {"tool.max_calls": [0, 1, 2]})
    return parse_spec(raw)


def test_grid_names_are_stable_and_ordered():
    spec = spec_of(axes={"tool.max_calls": [0, 2], "reward.exec_error_penalty": [0.0, -0.5]}, seeds=2)
    names = [r.name for r in spec.runs()]
    assert names == [
        "max_calls=0__exec_error_penalty=0.0__seed=0", "max_calls=0__exec_error_penalty=0.0__seed=1",
        "max_calls=0__exec_error_penalty=-0.5__seed=0", "max_calls=0__exec_error_penalty=-0.5__seed=1",
        "max_calls=2__exec_error_penalty=0.0__seed=0", "max_calls=2__exec_error_penalty=0.0__seed=1",
        "max_calls=2__exec_error_penalty=-0.5__seed=0", "max_calls=2__exec_error_penalty=-0.5__seed=1",
    ]
    # Same file -> same names (deterministic), and points group the seeds.
    assert names == [r.name for r in spec_of(axes={"tool.max_calls": [0, 2], "reward.exec_error_penalty": [0.0, -0.5]},
                                             seeds=2).runs()]
    assert len({r.point for r in spec.runs()}) == 4


def test_zip_pairs_values_and_needs_equal_lengths():
    spec = spec_of(axes={"algo.name": ["grpo", "ppo"], "train.lr": [1e-6, 2e-6]}, combine="zip")
    assert [r.name for r in spec.runs()] == ["name=grpo__lr=1e-06__seed=0", "name=ppo__lr=2e-06__seed=0"]
    with pytest.raises(SweepSpecError, match="same number"):
        spec_of(axes={"algo.name": ["grpo", "ppo"], "train.lr": [1e-6]}, combine="zip")


def test_names_are_filesystem_safe():
    spec = spec_of(axes={"data.train": ["/data/my set/train.jsonl", "arith"], "prompt.system": ["a b: c?", None]})
    for r in spec.runs():
        assert r.name == sanitize(r.name)
        assert "/" not in r.name and " " not in r.name and ":" not in r.name and "?" not in r.name
    assert spec.runs()[0].name == "train=train__system=a-b-c-__seed=0"
    assert spec.runs()[1].name == "train=train__system=null__seed=0"


def test_same_leaf_name_uses_the_full_key():
    spec = spec_of(axes={"rollout.temperature": [1.0], "eval.temperature": [0.5]})
    assert spec.runs()[0].name == "rollout.temperature=1.0__eval.temperature=0.5__seed=0"


def test_overrides_load_back_to_the_axis_values_and_set_group_and_tags():
    spec = spec_of(name="abl", axes={"sft.enabled": [False, True], "prompt.system": ["1"], "seed": [3, 4]},
                   base={"overrides": {"train.steps": 7}}, eval={"benchmarks": ["arith"], "limit": 5, "protocol": "greedy"})
    runs = validate_runs(spec)
    assert len(runs) == 4
    for run, cfg in runs:
        assert cfg.sft.enabled is run.values["sft.enabled"]
        assert cfg.prompt.system == "1"  # a string that looks like a number stays a string
        assert cfg.run.seed == run.seed == run.values["run.seed"]
        assert cfg.train.steps == 7
        assert (cfg.eval.bench, cfg.eval.limit, cfg.eval.n) == ("arith", 5, 1)
        assert (cfg.eval.during_train_bench, cfg.eval.during_train_limit) == ("arith", 5)  # trainer's final eval
        assert run.extra_benchmarks == ()
        assert cfg.tracking.group == "abl"
        assert f"enabled={'true' if run.values['sft.enabled'] else 'false'}" in cfg.tracking.tags
        assert f"seed={run.seed}" in cfg.tracking.tags
    assert [r.name for r, _ in runs][0] == "enabled=false__system=1__seed=3"


@pytest.mark.parametrize("value", ["1", "true", "null", "a,b", "x: y", "has space", "$x", "-0.5", "[1]", "plain"])
def test_format_value_round_trips_strings(value):
    cfg = load_config(None, [f"prompt.system={format_value(value)}"])
    assert cfg.prompt.system == value


@pytest.mark.parametrize(
    "raw, message, hint",
    [
        ({"axes": {"tool.max_cals": [1]}}, "unknown config key 'tool.max_cals'", "tool.max_calls"),
        ({"axes": {"tool.max_calls": []}}, "axis 'tool.max_calls' is empty", "at least one"),
        ({"axes": {}}, "no axes", "axes:"),
        ({"axez": {"tool.max_calls": [1]}}, "unknown field 'axez'", "allowed"),
        ({"eval": {"benchmark": ["arith"]}}, "unknown field 'benchmark' in eval", "benchmarks"),
        ({"base": {"override": {}}}, "unknown field 'override' in base", "overrides"),
        ({"combine": "cross"}, "combine 'cross'", "grid"),
        ({"seeds": 0}, "not positive", "seeds"),
        ({"axes": {"tool.max_calls": [1, 1]}}, "repeats a value", "once"),
        ({"axes": {"seed": [0, 1]}, "seeds": 2}, "both a seed axis", "one"),
        ({"axes": {"tool.max_calls": [1, 1], "algo.clip_low": [0.1, 0.1]}, "combine": "zip"}, "two identical runs",
         "differ"),
        ({"eval": {"protocol": "best@4"}}, "not greedy or avg@k", "avg@32"),
    ],
)
def test_spec_errors_are_one_line_with_a_hint(raw, message, hint):
    raw = {"name": "t", "axes": {"tool.max_calls": [0, 1]}, **raw}
    with pytest.raises(SweepSpecError) as e:
        parse_spec(raw)
    assert message in e.value.message and "\n" not in e.value.message
    assert hint in (e.value.hint or "")


@pytest.mark.parametrize(
    "axes, base, message",
    [
        ({"tool.max_calls": [1, "many"]}, {}, "tool.max_calls"),  # wrong type, caught by loading the config
        ({"algo.name": ["grpo", "dpo"]}, {}, "allowed: grpo, ppo, rloo"),  # outside the choices
        ({"tool.max_calls": [-2]}, {}, ">= -1"),  # range rule
        # cross-field rules a training run would reject are rejected by the dry-run too
        ({"algo.n_samples": [1, 4]}, {"overrides": {"algo.name": "grpo"}}, "algo.n_samples >= 2"),
        ({"algo.ppo_epochs": [0]}, {}, "algo.ppo_epochs must be > 0"),
        ({"train.save_every": [0]}, {}, "train.save_every must be > 0"),
        ({"tool.max_calls": [1]}, {"overrides": {"train.stepz": 3}}, "train.steps"),  # typo in the base
    ],
)
def test_every_run_config_is_validated_before_running(axes, base, message):
    spec = parse_spec({"name": "t", "axes": axes, "base": base})
    with pytest.raises(SweepSpecError) as e:
        validate_runs(spec)
    assert message in e.value.message + (e.value.hint or "")
    if "stepz" not in str(base):
        assert e.value.message.startswith("run '")  # says which run is wrong


def test_base_config_file_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  steps: 3\n")
    (tmp_path / "s.yaml").write_text("axes: {tool.max_calls: [1]}\nbase: {config: [base.yaml]}\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.name == "s"
    [(run, cfg)] = validate_runs(spec)
    assert cfg.train.steps == 3 and Path(run.config_files[0]).is_absolute()


def test_sampled_protocols_evaluate_every_benchmark_after_training():
    spec = spec_of(eval={"benchmarks": ["aime24", "aime25"], "protocol": "avg@32", "temperature": 1.0, "top_p": 0.7})
    [(run, cfg), *_] = validate_runs(spec)
    assert run.extra_benchmarks == ("aime24", "aime25")  # the trainer's own evaluation is greedy only
    assert cfg.eval.during_train_bench is None
    assert (cfg.eval.n, cfg.eval.temperature, cfg.eval.top_p) == (32, 1.0, 0.7)
    greedy = spec_of(eval={"benchmarks": ["arith", "math500"]}).runs()[0]
    assert greedy.extra_benchmarks == ("math500",)


def test_fingerprint_survives_the_normalised_copy_and_ignores_description():
    spec = spec_of(description="x", seeds=[0, 5], eval={"benchmarks": ["arith", "math500"], "n": 4})
    again = parse_spec(spec.to_dict())
    assert again.fingerprint() == spec.fingerprint()
    assert [r.name for r in again.runs()] == [r.name for r in spec.runs()]
    assert parse_spec({**spec.to_dict(), "description": "other"}).fingerprint() == spec.fingerprint()
    assert spec_of(seeds=[0, 6]).fingerprint() != spec.fingerprint()
    two = {"tool.max_calls": [0], "sft.enabled": [True]}
    swapped = dict(reversed(list(two.items())))
    assert spec_of(axes=two).fingerprint() != spec_of(axes=swapped).fingerprint()  # order changes run names


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    spec = load_spec(path)
    runs = validate_runs(spec)
    assert len(runs) >= 2
    assert len({r.name for r, _ in runs}) == len(runs)


def test_shipped_sweeps_exist():
    names = {p.relative_to(REPO / "sweeps").as_posix() for p in (REPO / "sweeps").rglob("*.yaml")}
    assert {"max_calls.yaml", "exec_penalty.yaml", "sft_vs_zero.yaml"} <= names
    assert any(n.startswith("paper/") for n in names)


def test_sweep_modules_import_no_engine():
    code = ("import sys, toolrl.sweep, toolrl.sweep.spec, toolrl.sweep.summary, toolrl.sweep.wandb_sweep, "
            "toolrl.sweep.local, toolrl.sweep.trial, toolrl.cli.sweep_cmd\n"
            "bad = [m for m in ('wandb', 'vllm', 'deepspeed', 'torch', 'matplotlib') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_zip_arms_may_share_a_value_on_one_axis():
    """Off / A alone / B alone: each key repeats its off value, the three runs differ."""
    spec = parse_spec({"name": "t", "combine": "zip", "seeds": [0],
                       "axes": {"algo.overlong_filter": [False, True, False], "algo.overlong_buffer": [0, 0, 32]}})
    assert [p for p in spec.points()] == [
        {"algo.overlong_filter": False, "algo.overlong_buffer": 0},
        {"algo.overlong_filter": True, "algo.overlong_buffer": 0},
        {"algo.overlong_filter": False, "algo.overlong_buffer": 32},
    ]
    assert len({r.name for r in spec.runs()}) == 3


def test_the_seeds_of_a_sweep_sample_and_order_problems_differently():
    """`seeds: [0, 1]` must give two different runs: run.seed drives the sampling seed and the problem order unless
    a config sets them (before, both seeds of a point sampled the very same trajectories)."""
    from toolrl.config.loader import load_config

    spec = parse_spec({"name": "t", "axes": {"tool.max_calls": [1]}, "seeds": [0, 1]})
    cfgs = [load_config(None, list(r.overrides)) for r in spec.runs()]
    assert [c.rollout.seed for c in cfgs] == [0, 1] and [c.data.shuffle_seed for c in cfgs] == [0, 1]
    pinned = parse_spec({"name": "t", "axes": {"tool.max_calls": [1]}, "seeds": [0, 1],
                         "base": {"overrides": {"rollout.seed": 5}}})
    assert {load_config(None, list(r.overrides)).rollout.seed for r in pinned.runs()} == {5}
