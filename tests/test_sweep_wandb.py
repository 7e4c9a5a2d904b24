"""W&B backend without a server: the sweep config comes from the same file, W&B parameters map back to exactly
the runs the local runner builds, and the agent's trial function runs the shared trial."""

from __future__ import annotations

import json

import pytest
import yaml

from test_sweep_standin import launcher
from toolrl.sweep.spec import SweepSpecError, parse_spec
from toolrl.sweep.status import read_status
from toolrl.sweep.wandb_sweep import (
    POINT_PARAM,
    SPEC_PARAM,
    WandbUnavailableError,
    agent_trial,
    require_wandb,
    run_from_params,
    spec_from_params,
    wandb_sweep_config,
)

GRID = {"name": "g", "axes": {"tool.max_calls": [0, 1, 2], "sft.enabled": [False, True]}, "seeds": [0, 7],
        "eval": {"benchmarks": ["arith"]}}
ZIP = {"name": "z", "axes": {"algo.name": ["grpo", "ppo"], "train.lr": [1e-6, 5e-7]}, "combine": "zip", "seeds": 2}


def params_as_agent_writes(config: dict, choice: dict) -> dict:
    """What the W&B agent hands a trial: {'key': {'value': v}} for every parameter (one grid point chosen)."""
    out = {}
    for k, p in config["parameters"].items():
        out[k] = {"value": choice[k] if k in choice else p["value"]}
    return out


def grid_points(config: dict) -> list[dict]:
    """Every combination W&B's grid method would hand out."""
    import itertools

    grid = {k: p["values"] for k, p in config["parameters"].items() if "values" in p}
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def test_grid_sweep_config_has_the_same_axes():
    spec = parse_spec(GRID)
    cfg = wandb_sweep_config(spec)
    assert cfg["method"] == "grid" and cfg["name"] == "g"
    assert cfg["parameters"]["tool.max_calls"] == {"values": [0, 1, 2]}
    assert cfg["parameters"]["sft.enabled"] == {"values": [False, True]}
    assert cfg["parameters"]["run.seed"] == {"values": [0, 7]}
    assert cfg["metric"] == {"name": "eval/arith/acc", "goal": "maximize"}
    assert len(grid_points(cfg)) == len(spec.runs())
    json.dumps(cfg)  # W&B needs plain JSON


@pytest.mark.parametrize("raw", [GRID, ZIP], ids=["grid", "zip"])
def test_every_wandb_trial_maps_to_the_local_run(raw):
    spec = parse_spec(raw)
    cfg = wandb_sweep_config(spec)
    # Through YAML like the agent's parameter file, so types survive the same way.
    trials = [yaml.safe_load(yaml.safe_dump(params_as_agent_writes(cfg, c))) for c in grid_points(cfg)]
    mapped = [run_from_params(spec_from_params(t), t) for t in trials]
    assert sorted(r.name for r in mapped) == sorted(r.name for r in spec.runs())
    local = {r.name: r for r in spec.runs()}
    for r in mapped:
        assert r.overrides == local[r.name].overrides and r.tags == local[r.name].tags


def test_zip_sweep_uses_a_point_index():
    cfg = wandb_sweep_config(parse_spec(ZIP))
    assert cfg["parameters"][POINT_PARAM] == {"values": [0, 1]}
    assert "algo.name" not in cfg["parameters"]  # W&B's grid would cross zipped axes


def test_nested_parameters_and_mismatched_specs():
    spec = parse_spec(GRID)
    nested = {"tool": {"max_calls": 2}, "sft": {"enabled": True}, "run": {"seed": 7}}
    assert run_from_params(spec, nested).name == "max_calls=2__enabled=true__seed=7"
    with pytest.raises(SweepSpecError, match="not one of the axis values"):
        run_from_params(spec, {"tool.max_calls": 5, "sft.enabled": True, "run.seed": 0})
    with pytest.raises(SweepSpecError, match="lack the axis"):
        run_from_params(spec, {"tool.max_calls": 1, "run.seed": 0})
    with pytest.raises(SweepSpecError, match="not created by"):
        spec_from_params({"tool.max_calls": {"value": 1}})


def test_agent_trial_runs_the_shared_trial_function(tmp_path, monkeypatch):
    spec = parse_spec({**GRID, "base": {"overrides": {"train.steps": 2}}})
    cfg = wandb_sweep_config(spec)
    param_file = tmp_path / "config-abc.yaml"
    param_file.write_text("wandb_version: 1\n\n" + yaml.safe_dump(
        params_as_agent_writes(cfg, {"tool.max_calls": 2, "sft.enabled": False, "run.seed": 7})))
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(param_file))
    agent_trial(tmp_path / "sweep", threads=1, launcher=launcher())
    run_dir = tmp_path / "sweep" / "runs" / "max_calls=2__enabled=false__seed=7"
    assert read_status(run_dir).state == "finished"
    argv = json.loads((run_dir / "invocations.txt").read_text().splitlines()[0])
    assert "tracking.wandb=true" in argv and "tracking.group=g" in argv
    assert (tmp_path / "sweep" / "sweep.yaml").is_file()  # `toolrl sweep summary` works on the agent's machine


def test_wandb_needs_a_key_and_online_mode(tmp_path):
    empty = {"HOME": str(tmp_path)}
    with pytest.raises(WandbUnavailableError, match="API key") as e:
        require_wandb(empty)
    assert "wandb login" in e.value.hint
    with pytest.raises(WandbUnavailableError, match="online mode"):
        require_wandb({**empty, "WANDB_API_KEY": "x" * 40, "WANDB_MODE": "offline"})
    require_wandb({**empty, "WANDB_API_KEY": "x" * 40})
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    require_wandb(empty)


def test_spec_travels_inside_the_wandb_config():
    spec = parse_spec(GRID)
    cfg = wandb_sweep_config(spec)
    again = spec_from_params({SPEC_PARAM: cfg["parameters"][SPEC_PARAM]})
    assert again.fingerprint() == spec.fingerprint()
