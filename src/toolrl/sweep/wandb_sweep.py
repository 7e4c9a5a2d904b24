"""W&B backend: a W&B sweep built from the same sweep file, and the agent that runs its trials.

The sweep config and the mapping from a W&B run's parameters back to a run are pure functions (tested without a
server). Grid sweeps carry one W&B parameter per axis plus ``run.seed``; zip sweeps carry the index of the axis
point (W&B's grid would cross zipped axes). The normalised sweep file travels inside the W&B sweep as a constant
parameter, so an agent on another machine needs nothing but the sweep id. wandb is imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from toolrl.errors import ToolrlError
from toolrl.sweep.spec import RunPlan, SweepSpec, SweepSpecError, parse_spec

SPEC_PARAM = "toolrl.sweep"
POINT_PARAM = "toolrl.point"
SEED_PARAM = "run.seed"


class WandbUnavailableError(ToolrlError):
    """W&B sweeps need a W&B server and an API key."""


def wandb_sweep_config(spec: SweepSpec, metric: str | None = None) -> dict[str, Any]:
    """The W&B sweep config (method grid) for a sweep file."""
    params: dict[str, Any] = {}
    axes = [a for a in spec.axes if a.key != SEED_PARAM]
    if spec.combine == "grid":
        for a in axes:
            params[a.key] = {"values": list(a.values)}
    else:
        params[POINT_PARAM] = {"values": list(range(len(spec.points())))}
    params[SEED_PARAM] = {"values": list(spec.seed_values())}
    params[SPEC_PARAM] = {"value": json.dumps(spec.to_dict())}  # key order kept: axis order decides run names
    config: dict[str, Any] = {"name": spec.name, "method": "grid", "parameters": params}
    if spec.description:
        config["description"] = spec.description
    metric = metric or (f"eval/{spec.eval.benchmarks[0]}/acc" if spec.eval.benchmarks else None)
    if metric:
        config["metric"] = {"name": metric, "goal": "maximize"}
    return config


def _unwrap(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """W&B parameters as a flat dotted mapping: {'k': {'value': v}} and nested dicts both become {'k': v}."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k in ("wandb_version", "_wandb"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and set(v) == {"value"}:
            out[key] = v["value"]
        elif isinstance(v, Mapping) and v and key not in (SPEC_PARAM,):
            out.update(_unwrap(v, key + "."))
        else:
            out[key] = v
    return out


def spec_from_params(params: Mapping[str, Any]) -> SweepSpec:
    flat = _unwrap(params)
    if SPEC_PARAM not in flat:
        raise SweepSpecError("this W&B sweep was not created by `toolrl sweep --backend wandb`",
                             "pass the sweep file with --spec")
    return parse_spec(json.loads(flat[SPEC_PARAM]))


def run_from_params(spec: SweepSpec, params: Mapping[str, Any]) -> RunPlan:
    """The run a W&B trial stands for: the same RunPlan (name, overrides, tags) the local runner would build."""
    flat = _unwrap(params)
    axes = [a for a in spec.axes if a.key != SEED_PARAM]
    if SEED_PARAM not in flat:
        raise SweepSpecError(f"W&B parameters lack {SEED_PARAM}", "create the sweep with `toolrl sweep --backend wandb`")
    seed = int(flat[SEED_PARAM])
    if spec.combine == "zip":
        points = spec.points()
        idx = int(flat.get(POINT_PARAM, -1))
        if not 0 <= idx < len(points):
            raise SweepSpecError(f"W&B point index {idx} is outside this zip sweep's {len(points)} points",
                                 "the --spec file differs from the one the W&B sweep was created from")
        return spec.make_run(points[idx], seed)
    values: dict[str, Any] = {}
    for a in axes:
        if a.key not in flat:
            raise SweepSpecError(f"W&B parameters lack the axis '{a.key}'",
                                 "the --spec file differs from the one the W&B sweep was created from")
        v = flat[a.key]
        match = [x for x in a.values if x == v and type(x) is type(v)] or [x for x in a.values if x == v]
        if not match:
            raise SweepSpecError(f"W&B gave {a.key}={v!r}, which is not one of the axis values {list(a.values)}",
                                 "the --spec file differs from the one the W&B sweep was created from")
        values[a.key] = match[0]  # the spec's own value keeps names identical to the local runner's
    return spec.make_run(values, seed)


def read_agent_params(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The current trial's parameters, from the file the W&B agent writes before calling our function.

    Reading the file (instead of ``wandb.init().config``) leaves the W&B run to the training subprocess, which
    joins it through the WANDB_RUN_ID / WANDB_SWEEP_ID variables the agent exports.
    """
    env = os.environ if env is None else env
    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        raise ToolrlError("no W&B sweep parameters for this trial (WANDB_SWEEP_PARAM_PATH is unset)",
                          "run trials through `toolrl sweep agent SWEEP_ID`")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return dict(raw)


def require_wandb(env: Mapping[str, str] | None = None) -> None:
    """Fail with a clear message unless W&B sweeps can work here (online mode and an API key)."""
    from toolrl.tracking.tracker import wandb_logged_in

    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        raise WandbUnavailableError(f"W&B sweeps need online mode, but WANDB_MODE={mode}",
                                    "unset WANDB_MODE, or use --backend local")
    if not wandb_logged_in(env):
        raise WandbUnavailableError("W&B sweeps need a W&B server and an API key, and none is configured",
                                    "run `wandb login` (or set WANDB_API_KEY), or use --backend local")


def create_sweep(spec: SweepSpec, project: str, entity: str | None = None) -> str:
    """Register the sweep with W&B; returns 'entity/project/sweep_id' for `toolrl sweep agent`."""
    require_wandb()
    import wandb

    try:
        with contextlib.redirect_stdout(sys.stderr):  # wandb prints the id and URL; stdout is for --json
            sweep_id = wandb.sweep(wandb_sweep_config(spec), project=project, entity=entity)
    except Exception as e:  # noqa: BLE001 - network and auth errors surface as many types
        raise WandbUnavailableError(f"W&B refused the sweep: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                    "check `wandb login` and the project/entity names") from None
    return "/".join(x for x in (entity, project, sweep_id) if x)


def agent_trial(sweep_dir: Path, *, spec: SweepSpec | None = None, threads: int = 1,
                launcher: Sequence[str] | None = None) -> None:
    """The function `wandb.agent` calls once per trial: parameters -> RunPlan -> the shared trial function."""
    from toolrl.sweep.local import prepare_sweep_dir, run_dir_of
    from toolrl.sweep.trial import run_trial

    params = read_agent_params()
    spec = spec or spec_from_params(params)
    run = run_from_params(spec, params)
    prepare_sweep_dir(spec, sweep_dir)  # the spec copy lets `toolrl sweep summary` read this machine's runs
    result = run_trial(run, run_dir_of(sweep_dir, run), threads=threads, launcher=launcher,
                       extra_overrides=["tracking.wandb=true"])
    if result.state == "failed":  # W&B marks the trial failed and the agent moves on
        raise RuntimeError(f"run {run.name} failed: {result.error.splitlines()[-1] if result.error else ''}")


def run_agent(sweep_id: str, sweep_dir: Path, *, spec: SweepSpec | None = None, count: int | None = None,
              threads: int = 1, launcher: Sequence[str] | None = None) -> None:
    require_wandb()
    import wandb

    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    wandb.agent(sweep_id, function=lambda: agent_trial(sweep_dir, spec=spec, threads=threads, launcher=launcher),
                count=count)
