"""A training run end to end: (distill | SFT | RL), the run directory, checkpoints, resume and the final model.

Run directory (docs/architecture.md): config.yaml, metrics.jsonl, rollouts/step_N.jsonl, checkpoints/step_N/ with
``checkpoints/latest`` naming the newest complete one, snapshots/step_N/ (weights only, with train.snapshot_every),
sft/model/ (when SFT ran), final/ (a Hugging Face model).
Steps are numbered from 1; a checkpoint of step k holds the state after k steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.errors import ConfigError, ToolrlError
from toolrl.train import checkpoint as ckpt
from toolrl.train.export import MODEL_CONFIG
from toolrl.types import Trajectory

CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"
SFT_DIR = "sft"
FINAL = "final"


class Hooks:
    """What a front end (the CLI's live view) hears about; every method is optional."""

    def phase(self, text: str) -> None: ...

    def header(self, text: str) -> None:
        """A line worth keeping on screen (e.g. which rollout engine was chosen and why)."""
        self.phase(text)

    def start(self, first_step: int, total_steps: int) -> None: ...

    def trajectory(self, traj: Trajectory) -> None: ...

    # Rollout progress events (toolrl.rollout.progress.RolloutEvents).
    def on_tokens(self, n: int) -> None: ...

    def on_call(self) -> None: ...

    def on_trajectory(self, traj: Trajectory) -> None:
        self.trajectory(traj)

    def step(self, step: int, metrics: dict[str, float]) -> None: ...


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check(cfg: RootConfig, world_size: int = 1) -> None:
    """Checks that need the number of processes; every other rule runs when the config loads (config/loader.py)."""
    t = cfg.train
    if t.prompts_per_step < world_size:
        raise ConfigError(f"train.prompts_per_step={t.prompts_per_step} is below the {world_size} ranks",
                          "each rank needs at least one problem per step")


def eval_metrics(bench: str, metrics: dict[str, Any]) -> dict[str, float]:
    """``eval/<bench>/<metric>`` for every numeric metric of an evaluation (avg@k, pass@k, maj@k when n > 1).

    >>> eval_metrics("arith", {"avg@4": 0.5, "pass@4": 1, "code/success_rate": None})
    {'eval/arith/avg@4': 0.5, 'eval/arith/pass@4': 1.0}
    """
    return {f"eval/{bench}/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Run:
    """One training run in ``run_dir``; ``execute()`` does the work and returns the final model directory."""

    tracker: Any = None
    tokenizer: Any = None

    def __init__(self, cfg: RootConfig, run_dir: Path, *, resume: bool = False, hooks: Hooks | None = None) -> None:
        from toolrl.models import resolve_device
        from toolrl.train.strategy import Strategy

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.hooks = hooks or Hooks()
        self.device = resolve_device(cfg.run.device)
        self.strategy = Strategy(cfg.deepspeed, self.device, bf16=cfg.model.dtype in ("auto", "bfloat16"))
        check(cfg, self.strategy.world_size)
        seed_everything(cfg.run.seed + self.strategy.rank)
        self.ckpt_root = self.run_dir / CHECKPOINTS

    # -- shared pieces --------------------------------------------------------------------------------------
    def _dtype(self) -> Any:
        from toolrl.models import resolve_dtype

        # DeepSpeed keeps fp32 master weights and casts to bf16 itself on GPU; on CPU everything is fp32.
        return resolve_dtype("float32" if self.cfg.model.dtype == "auto" else self.cfg.model.dtype, self.device)

    def _load_policy(self, path: str) -> Any:
        from toolrl.models import load_model

        # ZeRO-3 on GPU: load on the host and let DeepSpeed move each model to the GPU as it partitions it, so a
        # rank never holds the full policy and the full critic copy at once (toolrl.placement.plan, loading phase).
        zero3_gpu = self.cfg.deepspeed.zero_stage == 3 and self.device.startswith("cuda")
        model = load_model(path, self._dtype(), "cpu" if zero3_gpu else self.device, self.cfg.model.trust_remote_code)
        if self.cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.config.use_cache = False
        return model

    def _engine(self, module: Any, lr: float) -> Any:
        return self.strategy.engine(module, lr=lr, weight_decay=self.cfg.train.weight_decay,
                                    warmup_steps=self.cfg.train.warmup_steps, micro_batch=self.cfg.algo.micro_batch_size)

    def _save_hf(self, engine: Any, tokenizer: Any, target: Path, dtype: str = "auto") -> None:
        """Write a Hugging Face model directory atomically (rank 0), with full weights under ZeRO-3; ``dtype``
        (float32 / bfloat16 / float16) casts the saved weights, auto keeps the training dtype."""
        import torch

        with self.strategy.gathered_params(engine.module):
            if self.strategy.is_main:
                tmp = target.with_name(f".tmp-{target.name}")
                shutil.rmtree(tmp, ignore_errors=True)
                module = engine.module
                module.config.use_cache = True
                if dtype == "auto":
                    module.save_pretrained(tmp, safe_serialization=True)
                else:
                    cast = getattr(torch, dtype)
                    module.save_pretrained(tmp, safe_serialization=True,
                                           state_dict={k: v.to(cast) for k, v in module.state_dict().items()})
                    # save_pretrained names the live module's dtype; config.json must name the stored one
                    conf = json.loads((tmp / "config.json").read_text())
                    (tmp / "config.json").write_text(json.dumps({**conf, "dtype": dtype}, indent=2) + "\n")
                module.config.use_cache = False
                tokenizer.save_pretrained(tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
        self.strategy.barrier()

    # -- the run --------------------------------------------------------------------------------------------
    def execute(self) -> Path:
        from toolrl.models import load_tokenizer, resolve_model_path
        from toolrl.sandbox import build_sandbox

        self.hooks.phase("loading model")
        base_path = resolve_model_path(self.cfg.model)
        tokenizer = load_tokenizer(base_path, self.cfg.model.trust_remote_code)
        self.tokenizer = tokenizer  # saved with every checkpoint, so that each one exports to a model directory
        sandbox = build_sandbox(self.cfg)
        self.tracker = self._tracker(resume=self.resume) if self.strategy.is_main else None
        try:
            if self.cfg.train.stage == "distill":
                return self._distill(base_path, tokenizer, sandbox)
            policy_path = base_path
            if self.cfg.sft.enabled or self.cfg.train.stage == "sft":
                policy_path = str(self._sft(base_path, tokenizer, sandbox))
                if self.cfg.train.stage == "sft":
                    final = self.run_dir / FINAL
                    if self.strategy.is_main:
                        shutil.rmtree(final, ignore_errors=True)
                        shutil.copytree(policy_path, final)
                    self.strategy.barrier()
                    return final
            return self._rl(policy_path, tokenizer, sandbox)
        finally:
            if self.tracker is not None:
                self.tracker.finish()
            sandbox.close()

    def _sft(self, base_path: str, tokenizer: Any, sandbox: Any) -> Path:
        """SFT once per run: a finished SFT (sft/model) is reused on resume."""
        from toolrl.train.sft import run_sft

        out = self.run_dir / SFT_DIR / "model"
        if (out / "config.json").is_file():
            self.hooks.phase(f"SFT already done: {out}")
            return out
        if self.tracker is not None and self.resume:
            self.tracker.rewind(-1)  # an SFT stage killed before it finished starts over: drop its old records
        self.hooks.phase("preparing SFT data")
        examples = self._sft_examples(tokenizer, sandbox)
        mine = examples[self.strategy.rank :: self.strategy.world_size]
        engine = self._engine(self._load_policy(base_path), self.cfg.sft.lr)
        self.hooks.phase(f"SFT on {len(examples)} examples")
        tracker = self.tracker
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def on_step(step: int, record: dict[str, float]) -> None:
            if tracker is not None:
                tracker.log(0, {**record, "sft/step": step})  # step 0: before RL step 1
            self.hooks.step(-step, record)

        run_sft(engine, mine, pad_id=pad, epochs=self.cfg.sft.epochs, batch_size=self.cfg.sft.batch_size,
                micro_batch_size=self.cfg.algo.micro_batch_size, seed=self.cfg.run.seed,
                reduce=self._reduce, world_size=self.strategy.world_size, on_step=on_step)
        out.parent.mkdir(parents=True, exist_ok=True)
        self._save_hf(engine, tokenizer, out)
        del engine
        return out

    def _reduce(self, values: list[float], op: str) -> list[float]:
        return self.strategy.all_sum(values) if op == "sum" else self.strategy.all_max(values)

    def _sft_examples(self, tokenizer: Any, sandbox: Any) -> list[Any]:
        from toolrl.train.sft_data import arith_trajectories, load_sft_file, trajectory_example

        limit = self.cfg.sft.max_examples
        if self.cfg.sft.data:
            return load_sft_file(self.cfg.sft.data, tokenizer, self.cfg.tool.format, limit, self.cfg.sft.messages_key)
        if self.cfg.data.train != "arith":
            raise ConfigError("sft.data is empty and data.train is not arith",
                              "give sft.data=FILE.jsonl (trajectories or chat messages), or build one with train.stage=distill")
        from toolrl.eval.arith import arith_problems

        # Its own split: the SFT traces are not the RL training problems.
        problems = arith_problems(limit or 256, self.cfg.data.arith_digits, seed=self.cfg.data.shuffle_seed, split="sft")
        return [trajectory_example(t) for t in arith_trajectories(problems, self.cfg, tokenizer, sandbox)]

    def _tracker(self, resume: bool) -> Any:
        from toolrl.tracking import Tracker

        return Tracker(self.cfg, self.run_dir, resume=resume)

    # -- RL ---------------------------------------------------------------------------------------------------
    def _rl(self, policy_path: str, tokenizer: Any, sandbox: Any) -> Path:
        import copy

        from toolrl.placement.build import build_rollout_engine
        from toolrl.rollout import build_engine, choose_backend
        from toolrl.train.data import ProblemStream
        from toolrl.train.forward import ValueModel
        from toolrl.train.rl import RLStep

        cfg = self.cfg
        self.hooks.phase("building engines")
        found = ckpt.latest(self.ckpt_root) if self.resume else None
        # A pruned finished run keeps its last policy weights only in final/ (ckpt.prune_finished).
        weights_path = str(self.run_dir / FINAL) if found is not None and self._pruned(found).get(
            "policy_weights") == ckpt.PRUNED_POLICY else policy_path
        module = self._load_policy(weights_path)
        critic = ref = None
        if cfg.algo.name == "ppo":
            critic = self._engine(ValueModel(module), cfg.algo.critic_lr)
        if cfg.algo.kl_coef > 0:  # the reference is the starting policy, also when resuming from final/
            start = module if weights_path == policy_path else self._load_policy(policy_path)
            ref = copy.deepcopy(start).eval().requires_grad_(False).to(self.device)
        policy = self._engine(module, cfg.train.lr)
        rollout_cfg = copy.deepcopy(cfg)
        rollout_cfg.model.path = policy_path
        choice = choose_backend(rollout_cfg, "train")
        if choice.name == "hf":  # shares the policy's weights: it generates with the live module
            engine = build_engine(rollout_cfg, model=policy.module, tokenizer=tokenizer, choice=choice)
        else:  # keeps its own copy of the weights, placed by rollout.placement, synced after every update
            engine = build_rollout_engine(rollout_cfg, self.strategy, tokenizer, self.run_dir, choice=choice)
        self.hooks.header(choice.header())
        stream = ProblemStream(self._train_problems(tokenizer), seed=cfg.data.shuffle_seed)
        if cfg.eval.during_train_bench:  # fail now, not at the first periodic evaluation, if a prompt cannot fit
            from toolrl.eval import load_problems
            from toolrl.eval.evaluator import check_prompts_fit

            check_prompts_fit(load_problems(cfg.eval.during_train_bench, cfg, cfg.eval.during_train_limit), cfg, engine)
        stepper = RLStep(cfg, strategy=self.strategy, policy=policy, tokenizer=tokenizer, rollout_engine=engine,
                         sandbox=sandbox, stream=stream, critic=critic, ref=ref)

        start = 0
        if found is not None:
            start = self._load_checkpoint(found, policy, critic, stream)
            if engine.caps.needs_weight_sync:
                stepper._after_update()  # the engine started from the old weights
        elif engine.caps.needs_weight_sync and cfg.rollout.placement == "server":
            stepper._after_update()  # a rollout server serves whatever it loaded last: start from the policy's weights
        tracker = self.tracker
        if tracker is not None and self.resume:
            tracker.rewind(start)  # steps after the checkpoint are re-run: drop their old records
        self.hooks.start(start + 1, cfg.train.steps)
        try:
            for step in range(start + 1, cfg.train.steps + 1):
                result = stepper.run(step, progress=self.hooks if self.strategy.is_main else None)
                metrics = result.metrics
                metrics["data/prompts_filtered"] = float(self.prompts_filtered)
                if cfg.eval.during_train_bench and cfg.eval.every > 0 and step % cfg.eval.every == 0:
                    metrics.update(self._evaluate(engine, policy, sandbox))
                if tracker is not None:
                    tracker.log(step, metrics)
                    tracker.log_rollouts(step, result.trajectories)
                self.hooks.step(step, metrics)
                if step % cfg.train.save_every == 0 or step == cfg.train.steps:
                    self._save_checkpoint(step, policy, critic, stream, tracker)
                if cfg.train.snapshot_every > 0 and step % cfg.train.snapshot_every == 0:
                    self._snapshot(step, policy)
            if cfg.eval.during_train_bench and (cfg.eval.every <= 0 or cfg.train.steps % cfg.eval.every != 0):
                final_eval = self._evaluate(engine, policy, sandbox)
                if tracker is not None and final_eval:
                    tracker.log(cfg.train.steps, final_eval)
                self.hooks.phase("final evaluation: " + ", ".join(f"{k}={v:.3g}" for k, v in final_eval.items()))
            self.hooks.phase("saving the final model")
            final = self.run_dir / FINAL
            self._save_hf(policy, tokenizer, final)
            if cfg.train.prune_on_finish:  # only now: until final/ exists a crash still needs every state
                self.hooks.phase("pruning optimizer states")
                if self.strategy.is_main:
                    ckpt.prune_finished(self.ckpt_root, final)
                self.strategy.barrier()
            return final
        finally:
            if not engine.caps.shares_policy_weights:  # a shared module belongs to the trainer
                engine.close()

    prompts_filtered = 0

    def _train_problems(self, tokenizer: Any) -> list[Any]:
        """The training set without prompts over rollout.max_prompt_tokens (ToRL's loader drops them too)."""
        from toolrl.eval.benchmarks import load_train_problems
        from toolrl.rollout.prompts import prompt_lengths
        from toolrl.train.data import drop_long_prompts

        cfg = self.cfg
        problems = load_train_problems(cfg)
        kept, self.prompts_filtered = drop_long_prompts(problems, prompt_lengths(problems, cfg, tokenizer),
                                                        cfg.rollout.max_prompt_tokens)
        self.hooks.phase(f"training set: {len(kept)} of {len(problems)} problems; {self.prompts_filtered} dropped "
                         f"with prompts over rollout.max_prompt_tokens={cfg.rollout.max_prompt_tokens}")
        return kept

    def _evaluate(self, engine: Any, policy: Any, sandbox: Any) -> dict[str, float]:
        """Evaluate the live policy on eval.during_train_bench (rank 0; others wait) with the protocol of
        `toolrl eval` (``eval_protocol``): greedy pass@1, or ``eval.n`` samples for avg@k / pass@k / maj@k."""
        from toolrl.eval import eval_protocol, evaluate, load_problems

        cfg = self.cfg
        out: dict[str, float] = {}
        # A colocated tensor-parallel engine needs its whole TP group: the others replay rank 0's engine calls.
        solo = getattr(engine, "solo", None)
        with self.strategy.gathered_params(policy.module):
            with solo() if callable(solo) else _as_is(engine) as engine:
                if self.strategy.is_main:
                    n, sampling, protocol = eval_protocol(cfg)
                    self.hooks.phase(f"evaluating on {cfg.eval.during_train_bench} ({protocol})")
                    problems = load_problems(cfg.eval.during_train_bench, cfg, cfg.eval.during_train_limit)
                    res = evaluate(problems, cfg=cfg, engine=engine, sandbox=sandbox, n=n, sampling=sampling)
                    out = eval_metrics(Path(cfg.eval.during_train_bench).stem, res.metrics)
            self.strategy.barrier()
        return out

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _save_checkpoint(self, step: int, policy: Any, critic: Any, stream: Any, tracker: Any) -> None:
        import torch

        self.hooks.phase(f"checkpoint step {step}")
        if self.strategy.is_main:
            ckpt.begin(self.ckpt_root, step)
        self.strategy.barrier()
        tmp = ckpt.tmp_dir_for(self.ckpt_root, step)
        policy.save_checkpoint(str(tmp / "policy"), tag="state", save_latest=False)
        if critic is not None:
            critic.save_checkpoint(str(tmp / "critic"), tag="state", save_latest=False)
        torch.save(ckpt.rng_state(), tmp / f"rng_rank{self.strategy.rank}.pt")
        self.strategy.barrier()
        if self.strategy.is_main:
            self._save_model_config(policy.module, tmp / MODEL_CONFIG)
            run_id_file = self.run_dir / "wandb_run_id"
            state = {"step": step, "data": stream.state(), "world_size": self.strategy.world_size,
                     "wandb_run_id": run_id_file.read_text().strip() if run_id_file.is_file() else None,
                     "time": time.time()}
            ckpt.publish(self.ckpt_root, step, state, keep=self.cfg.train.keep_checkpoints)
        self.strategy.barrier()

    def _save_model_config(self, module: Any, target: Path) -> None:
        """Config, generation config and tokenizer (a few MB): what turns the checkpoint's weights into a model
        directory (toolrl.train.export)."""
        module.config.use_cache = True
        module.config.save_pretrained(target)
        module.config.use_cache = False
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.save_pretrained(target)
        self.tokenizer.save_pretrained(target)

    def _snapshot(self, step: int, policy: Any) -> None:
        """Weights only, as a Hugging Face model directory (no optimizer states): RUN/snapshots/step_N."""
        self.hooks.phase(f"snapshot step {step}")
        target = self.run_dir / SNAPSHOTS / ckpt.step_dir_name(step)
        if self.strategy.is_main:
            target.parent.mkdir(parents=True, exist_ok=True)
        self._save_hf(policy, self.tokenizer, target, dtype=self.cfg.train.snapshot_dtype)

    @staticmethod
    def _pruned(path: Path) -> dict[str, Any]:
        return ckpt.read_state(path).get("pruned") or {}

    def _load_checkpoint(self, path: Path, policy: Any, critic: Any, stream: Any) -> int:
        import torch

        state = ckpt.read_state(path)
        if int(state.get("world_size", 1)) != self.strategy.world_size:
            raise ToolrlError(f"checkpoint {path.name} was written by {state.get('world_size')} ranks, this run has "
                              f"{self.strategy.world_size}", "resume with the same number of processes")
        pruned = self._pruned(path)
        self.hooks.phase(f"resuming from {path.name}" + (" (pruned: fresh optimizer states)" if pruned else ""))
        # A pruned checkpoint has no optimizer states: AdamW's moments (and, with weights from final/, the
        # warm-up) start again; train.prune_on_finish=false keeps them for an exact continuation.
        if pruned.get("policy_weights") != ckpt.PRUNED_POLICY:
            policy.load_checkpoint(str(path / "policy"), tag="state", load_optimizer_states=not pruned,
                                   load_lr_scheduler_states=True)
        if critic is not None:
            critic.load_checkpoint(str(path / "critic"), tag="state", load_optimizer_states=not pruned,
                                   load_lr_scheduler_states=True)
        stream.load_state(state["data"])
        rng_file = path / f"rng_rank{self.strategy.rank}.pt"
        if rng_file.is_file():
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        return int(state["step"])

    # -- distillation ---------------------------------------------------------------------------------------
    def _distill(self, base_path: str, tokenizer: Any, sandbox: Any) -> Path:
        from toolrl.train.distill import distill

        return distill(self.cfg, self.run_dir, model_path=base_path, tokenizer=tokenizer, sandbox=sandbox,
                       device=self.device, hooks=self.hooks, strategy=self.strategy)


@contextlib.contextmanager
def _as_is(obj: Any) -> Any:
    yield obj


def train(cfg: RootConfig, run_dir: str | Path, *, resume: bool = False, hooks: Hooks | None = None) -> Path:
    """Run training as configured; returns the final model directory (or the distilled data file)."""
    return Run(cfg, Path(run_dir), resume=resume, hooks=hooks).execute()
