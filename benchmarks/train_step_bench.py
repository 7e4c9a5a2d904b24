"""Time one GRPO update step: toolrl's trainer (DeepSpeed) vs TRL's GRPOTrainer, in the same run.

Both sides train their own copy of the same model (default: the embedded SmolLM2-135M) with fused AdamW, gradient
clipping 1.0, fp32, no gradient checkpointing, no KL, no reference model, clip band [0.8, 1.28], token-mean loss.
TRL runs its ordinary training loop: each step generates ``prompts x group`` completions (HF generate, forced to
exactly ``--completion-len`` tokens, no tool), scores them, then runs forward, loss, backward and optimizer step.
Right after each TRL step, toolrl updates on *exactly the sequences TRL just sampled* (same prompt and completion
ids, same rewards) through its real update path: ``toolrl.train.batch.pack`` and ``PolicyUpdater.run`` (GRPO
advantages, clipped policy loss, entropy metric, backward, step) on a DeepSpeed ZeRO-0 engine built by
``toolrl.train.strategy.Strategy``. Interleaving the two keeps them under the same machine load.

Update time: toolrl = its whole update call; TRL = step time minus its generation-and-scoring time. Medians over
the measured steps (the first ``--warmup`` steps are dropped). Target: ratio toolrl/TRL <= 1.

    .venv/bin/python benchmarks/train_step_bench.py          # ~6-10 min on 2 shared cores (+1 min DeepSpeed op build once)
    .venv/bin/python benchmarks/train_step_bench.py --steps 3 --json   # machine-readable result on stdout
Needs the `bench` extra (trl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: 2 threads on 2 shared cores spike step times 20-80x
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prompts(n: int) -> list[str]:
    # Fixed arithmetic questions of equal shape, so prompt lengths barely differ.
    return [f"Compute {1234 + 97 * i} * {5678 - 31 * i}. Put the final answer in \\boxed{{}}.\n" for i in range(n)]


def _reward(completions: list[str], **_: Any) -> list[float]:
    """A cheap reward with spread inside each group (the real grader is not what is timed here)."""
    return [float(len(set(c)) % 3) - 1.0 for c in completions]


class ToolrlUpdate:
    """toolrl's own update path: ``toolrl.train`` packs trajectories and runs ``PolicyUpdater`` on a DeepSpeed engine
    built by ``Strategy`` (ZeRO-0, fused torch AdamW), exactly as ``RLStep`` times it (``time/update_s``)."""

    def __init__(self, model: Any, tok: Any, lr: float, batch: int, group: int) -> None:
        from toolrl.config.schema import AlgoConfig, DeepSpeedConfig
        from toolrl.train.strategy import Strategy
        from toolrl.train.update import PolicyUpdater, UpdatePlan

        self.strategy = Strategy(DeepSpeedConfig(zero_stage=0, gradient_clipping=1.0), "cpu")
        self.engine = self.strategy.engine(model, lr=lr, weight_decay=0.0, warmup_steps=0, micro_batch=batch)
        self.engine.train()
        algo = AlgoConfig(name="grpo", n_samples=group, mini_batch_size=batch, micro_batch_size=batch,
                          clip_low=0.2, clip_high=0.28, loss_agg="token_mean", kl_coef=0.0, entropy_coef=0.0)
        self.updater = PolicyUpdater(self.engine, algo, temperature=1.0)
        self.plan = UpdatePlan(epochs=1, mini_batches=1, micro_batch_size=batch)  # one micro-batch, like TRL here
        self.pad_id = tok.pad_token_id
        self.group = group

    def _trajectories(self, batch: dict[str, Any], rewards: list[float]) -> list[Any]:
        """TRL's padded tensors back into toolrl trajectories (prompt-major, ``group`` samples per prompt)."""
        from toolrl.types import Problem, Trajectory

        out = []
        for i, reward in enumerate(rewards):
            p = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
            r = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
            t = Trajectory(Problem(f"p{i // self.group}", "", ""), i % self.group, "", p, r, [1] * len(r))
            t.reward = reward
            out.append(t)
        return out

    def __call__(self, batch: dict[str, Any], rewards: list[float]) -> tuple[float, dict[str, float]]:
        from toolrl.train.batch import pack

        trajs = self._trajectories(batch, rewards)  # not timed: the trainer gets trajectories from its rollout
        t0 = time.perf_counter()
        packed = pack(trajs, self.pad_id).to(self.engine.device)
        stats = self.updater.run(packed, self.plan)
        return time.perf_counter() - t0, stats


def _trl_trainer(model: Any, tok: Any, args: argparse.Namespace, out_dir: str, reward: Any) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    batch = args.prompts * args.group
    cfg = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=batch,  # one optimizer step = one generation batch = one micro-batch
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.completion_len,
        generation_kwargs={"min_new_tokens": args.completion_len},  # exactly the same length every step
        temperature=1.0,
        learning_rate=args.lr,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",  # token mean over the batch, like toolrl's loss_agg=token_mean
        max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL's default is on; toolrl's is off
        bf16=False,
        use_cpu=True,
        max_steps=args.warmup + args.steps,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    data = Dataset.from_dict({"prompt": _prompts(max(64, batch))})
    return GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback

    from toolrl.config.schema import ModelConfig
    from toolrl.models import load_model, load_tokenizer, resolve_model_path

    torch.manual_seed(0)
    path = args.model or resolve_model_path(ModelConfig())
    tok = load_tokenizer(path)
    tok.padding_side = "left"
    trl_model = load_model(path, torch.float32)
    ours_model = load_model(path, torch.float32)
    batch = args.prompts * args.group

    with tempfile.TemporaryDirectory(prefix="train-step-bench-") as out_dir:
        rows: list[dict[str, Any]] = []
        captured: dict[str, Any] = {}
        reward_log: list[list[float]] = []

        def recording_reward(completions: list[str], **kw: Any) -> list[float]:
            r = _reward(completions, **kw)
            reward_log.append(r)
            return r

        # Build TRL first, while no RANK/WORLD_SIZE is set: it runs as a plain single process, as its users would.
        trainer = _trl_trainer(trl_model, tok, args, out_dir, recording_reward)
        _log("initialising DeepSpeed (the first run JIT-builds a small op, about a minute, then it is cached)")
        ours = ToolrlUpdate(ours_model, tok, args.lr, batch, args.group)
        gen_and_score = trainer._generate_and_score_completions

        def timed_generate(inputs: Any) -> Any:
            t0 = time.perf_counter()
            out = gen_and_score(inputs)
            captured["gen_s"] = time.perf_counter() - t0
            captured["batch"] = {k: out[k].detach().clone() for k in
                                 ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
            return out

        trainer._generate_and_score_completions = timed_generate

        class Interleave(TrainerCallback):
            def on_step_begin(self, *a: Any, **k: Any) -> None:
                captured["t0"] = time.perf_counter()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                trl_step = time.perf_counter() - captured["t0"]
                trl_update = trl_step - captured["gen_s"]
                ours_update, stats = ours(captured["batch"], reward_log[-1])
                step = len(rows)
                tokens = int(captured["batch"]["completion_mask"].sum())
                rows.append({"step": step, "trl_update_s": trl_update, "trl_gen_s": captured["gen_s"],
                             "toolrl_update_s": ours_update, "completion_tokens": tokens, **stats})
                tag = "warmup" if step < args.warmup else "measured"
                _log(f"step {step} ({tag}): TRL update {trl_update:.2f}s (generation {captured['gen_s']:.2f}s), "
                     f"toolrl update {ours_update:.2f}s, {tokens} completion tokens")

        trainer.add_callback(Interleave())
        trainer.train()

    measured = rows[args.warmup:]
    trl_med = statistics.median(r["trl_update_s"] for r in measured)
    ours_med = statistics.median(r["toolrl_update_s"] for r in measured)
    return {
        "model": path,
        "batch": {"prompts": args.prompts, "group": args.group, "completion_len": args.completion_len,
                  "prompt_len": int(captured["batch"]["prompt_ids"].shape[1])},
        "toolrl_path": "toolrl.train: pack + PolicyUpdater.run on a Strategy-built DeepSpeed ZeRO-0 engine",
        "threads": torch.get_num_threads(),
        "steps": rows,
        "median_update_s": {"toolrl": ours_med, "trl": trl_med},
        "ratio_toolrl_over_trl": ours_med / trl_med,
        # Each step's pair ran back to back under the same load: the median of per-step ratios resists load drift.
        "median_step_ratio": statistics.median(r["toolrl_update_s"] / r["trl_update_s"] for r in measured),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF model dir (default: the embedded SmolLM2-135M)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--group", type=int, default=4, help="samples per prompt (GRPO group size)")
    p.add_argument("--completion-len", type=int, default=64, help="completion tokens per sample (forced)")
    p.add_argument("--steps", type=int, default=4, help="measured steps")
    p.add_argument("--warmup", type=int, default=1, help="steps dropped before measuring")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--json", action="store_true", help="print the full result as JSON on stdout")
    args = p.parse_args()
    # DeepSpeed and TRL print to stdout (DeepSpeed's handler holds the stream itself, so redirect_stdout is not
    # enough): point fd 1 at stderr while they run, so stdout carries only the result.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        res = run(args)
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    med = res["median_update_s"]
    b = res["batch"]
    print(f"GRPO update step, {b['prompts']} prompts x {b['group']} samples x {b['completion_len']} tokens, "
          f"{len(res['steps']) - args.warmup} measured steps, {res['threads']} thread(s)")
    print(f"  toolrl (trainer, DeepSpeed ZeRO-0)  median update: {med['toolrl']:.3f} s")
    print(f"  TRL GRPOTrainer                    median update: {med['trl']:.3f} s")
    print(f"  ratio toolrl/TRL: {res['ratio_toolrl_over_trl']:.3f} of medians, "
          f"{res['median_step_ratio']:.3f} median of per-step ratios  (target <= 1.0)")


if __name__ == "__main__":
    main()
