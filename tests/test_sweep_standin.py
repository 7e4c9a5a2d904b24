"""A stand-in for `toolrl train` / `toolrl eval`, run as a script by the sweep tests (the launcher is
``[python, this file]``). It parses the same arguments, loads the config with the real loader, and writes the
run-directory contract (config.yaml, metrics.jsonl, checkpoints/latest, final/, eval/<bench>/results.json) fast.

Behaviour switches (environment): STANDIN_FAIL=<run name> exits 3 for that run; STANDIN_STOP_AT=<step> makes
a fresh run checkpoint and die at that step (an interrupted run); STANDIN_SLEEP=<s> sleeps after each step;
STANDIN_KILLED=1 makes that death a SIGKILL. Every invocation is appended to
<run>/invocations.txt, and the thread count it got to <run>/threads.txt.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

STANDIN = Path(__file__).resolve()


def launcher() -> list[str]:
    return [sys.executable, str(STANDIN)]


def reward_at(max_calls: int, seed: int, step: int) -> float:
    """Deterministic learning curve: more calls learn faster; the seed shifts it a little."""
    return round(-1.0 + 0.05 * step * (1 + max_calls) + 0.01 * seed, 6)


def _train(args: list[str]) -> int:
    from toolrl.config import load_config, save_config

    files, overrides, out, resume = [], [], None, None
    it = iter(args)
    for a in it:
        if a == "--config":
            files.append(next(it))
        elif a == "--out":
            out = Path(next(it))
        elif a == "--resume":
            resume = Path(next(it))
        else:
            overrides.append(a)
    run_dir = resume or out
    assert run_dir is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "invocations.txt", "a") as fh:
        fh.write(json.dumps(["train", *args]) + "\n")
    (run_dir / "threads.txt").write_text(os.environ.get("OMP_NUM_THREADS", ""))
    (run_dir / "pid.txt").write_text(str(os.getpid()))
    if resume:
        cfg = load_config([run_dir / "config.yaml"])
        start = int((run_dir / "checkpoints" / "latest").read_text()) + 1
    else:
        cfg = load_config(files, overrides)
        save_config(cfg, run_dir / "config.yaml")
        start = 1
    if os.environ.get("STANDIN_FAIL") == run_dir.name:
        print("Traceback (most recent call last):\nRuntimeError: stand-in exploded on purpose", file=sys.stderr)
        return 3
    stop_at = int(os.environ.get("STANDIN_STOP_AT", "0") or 0)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        for step in range(start, cfg.train.steps + 1):
            c = cfg.tool.max_calls
            rec = {"step": step, "time": 1000.0 + step, "reward/mean": reward_at(c, cfg.run.seed, step),
                   "acc": 0.1 * c, "code/share": 0.0 if c == 0 else 0.5, "code/success_rate": 0.8,
                   "code/calls_per_response": 0.5 * c, "response/len": 100.0 + step, "time/step_s": 2.0 + c}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            (run_dir / "checkpoints" / "latest").write_text(str(step))
            time.sleep(float(os.environ.get("STANDIN_SLEEP", "0") or 0))
            if stop_at and not resume and step == stop_at:
                if os.environ.get("STANDIN_KILLED"):  # as the out-of-memory killer would end it: no word of its own
                    os.kill(os.getpid(), signal.SIGKILL)
                return 1
        if cfg.eval.during_train_bench:  # like the trainer: greedy final evaluation of this one benchmark
            fh.write(json.dumps({"step": cfg.train.steps, "time": 2000.0,
                                 f"eval/{cfg.eval.during_train_bench}/acc": 0.2 + 0.1 * cfg.tool.max_calls}) + "\n")
    (run_dir / "final").mkdir(exist_ok=True)
    return 0


def _eval(args: list[str]) -> int:
    from toolrl.config import load_config

    opts = dict(zip(args[::2], args[1::2]))
    cfg = load_config([opts["--config"]])
    out = Path(opts["--out"])
    out.mkdir(parents=True, exist_ok=True)
    acc = 0.3 + 0.1 * cfg.tool.max_calls
    (out / "results.json").write_text(json.dumps({"bench": opts["--bench"], "metrics": {"acc": acc, "n": 1}}))
    return 0


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    sys.exit(_train(rest) if cmd == "train" else _eval(rest))
