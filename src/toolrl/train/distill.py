"""``train.stage=distill``: build SFT data by rejection sampling.

The model solves training problems with the tool (``algo.n_samples`` samples each); only trajectories that are
correct and whose every code call ran (kind ok) are kept, written as ``Trajectory.to_dict`` lines to
``RUN_DIR/distill.jsonl``: pass that file as ``sft.data`` of a later run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.types import ExecKind, Trajectory

DISTILL_FILE = "distill.jsonl"


def keep(traj: Trajectory) -> bool:
    """A usable SFT trace: correct, used the tool, and every call ran without an error."""
    return bool(traj.correct) and traj.has_code and all(c.kind == ExecKind.OK for c in traj.calls)


def distill(cfg: RootConfig, run_dir: Path, *, model_path: str, tokenizer: Any, sandbox: Any, device: str,
            hooks: Any, strategy: Any) -> Path:
    from toolrl.eval.benchmarks import load_train_problems
    from toolrl.models import load_model, resolve_dtype
    from toolrl.rollout import build_engine, choose_backend, run_rollouts, sampling_from_config
    from toolrl.reward import score
    from toolrl.train.data import ProblemStream, shard

    target = cfg.sft.max_examples or 256
    stream = ProblemStream(load_train_problems(cfg), seed=cfg.data.shuffle_seed)
    choice = choose_backend(cfg, "generate")
    hooks.header(choice.header())
    model = None
    if choice.name == "hf":  # loaded here, on the run's device; vLLM loads cfg.model itself
        model = load_model(model_path, resolve_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code)
    engine = build_engine(cfg, model=model, tokenizer=tokenizer, choice=choice)
    sampling = sampling_from_config(cfg)
    path = run_dir / DISTILL_FILE
    tmp = path.with_suffix(f".jsonl.tmp{strategy.rank}")  # every rank writes the same lines; rank 0 publishes
    kept = tried = 0
    rounds = max(1, cfg.train.steps)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in range(rounds):
                problems = shard(stream.next(cfg.train.prompts_per_step), strategy.rank, strategy.world_size)
                hooks.phase(f"distill round {r + 1}/{rounds}: {kept} kept of {tried}")
                trajs = run_rollouts(problems, engine=engine, sandbox=sandbox, cfg=cfg, sampling=sampling,
                                     n=cfg.algo.n_samples, progress=hooks)
                mine = []
                for t in trajs:
                    if t.reward is None:
                        score(t, cfg.reward, cfg.tool.format)
                    if keep(t):
                        mine.append(t.to_dict())
                everything = [d for part in strategy.all_gather(mine) for d in part]
                tried += int(strategy.all_sum([float(len(trajs))])[0])
                for d in everything[: max(0, target - kept)]:
                    fh.write(json.dumps(d, ensure_ascii=False) + "\n")
                kept = min(target, kept + len(everything))
                hooks.step(r + 1, {"distill/kept": float(kept), "distill/tried": float(tried)})
                if kept >= target:
                    break
        if strategy.is_main:
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)
    finally:
        engine.close()
    strategy.barrier()
    hooks.phase(f"kept {kept} of {tried} trajectories -> {path}")
    return path
