"""Multi-turn tool rollouts three ways, measured in the same run: sequential, batched hf, asynchronous vLLM.

One batch of trajectories (default 16 problems x 2 samples = 32, C=2, the embedded SmolLM2-135M-Instruct in
float32, sampling at temperature 1) with the real local sandbox, where every code call also sleeps ``--code-s``
(0.2 s) inside the sandbox, standing in for slower code.

- sequential: one trajectory at a time through the hf engine (the naive baseline; ``--seq-limit`` of them, since
  its rate does not depend on how many are run);
- hf batched: ``run_rollouts`` with the hf engine (generate the whole batch, then run that turn's calls);
- vllm async: ``run_rollouts`` with the vllm engine (asynchronous scheduler).

Reported per method: generated model tokens/s, wall time, sandbox time and the share of it hidden behind
generation (a call's time during which the engine was generating), and the throughput ratio against hf batched.
Model load and engine start are outside the timed region (they happen once per training run).

    OMP_NUM_THREADS=1 python benchmarks/rollout_bench.py [--problems 16 --n 2 --repeats 1 --json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from toolrl.config.schema import RootConfig  # noqa: E402
from toolrl.rollout.async_runner import hidden_share  # noqa: E402
from toolrl.rollout.engine import SamplingSpec  # noqa: E402
from toolrl.rollout.loop import run_rollouts  # noqa: E402
from toolrl.types import Problem  # noqa: E402


class SlowCodeSandbox:
    """The real sandbox, with every call's code made to sleep first; records each call's wall interval."""

    def __init__(self, inner: Any, code_s: float) -> None:
        self.inner, self.code_s = inner, code_s
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def run(self, code: str, *, timeout_s: float, session: str | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.run(f"import time as _t; _t.sleep({self.code_s})\n{code}", timeout_s=timeout_s,
                                  session=session)
        finally:
            with self._lock:
                self.intervals.append((t0, time.perf_counter()))

    def close_session(self, session: str) -> None:
        self.inner.close_session(session)

    def close(self) -> None:
        self.inner.close()


class TimedEngine:
    """Records the wall interval of every generate call of a batched engine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokenizer, self.eos_token_ids = inner.tokenizer, inner.eos_token_ids
        self.intervals: list[tuple[float, float]] = []

    def generate(self, requests: list, sampling: SamplingSpec) -> list:
        t0 = time.perf_counter()
        try:
            return self.inner.generate(requests, sampling)
        finally:
            self.intervals.append((t0, time.perf_counter()))

    def close(self) -> None:
        pass


def problems(k: int) -> list[Problem]:
    return [
        Problem(id=f"mul{i}", problem=f"What is {137 + 7 * i} * {29 + 3 * i}? Use Python to compute it.",
                answer=str((137 + 7 * i) * (29 + 3 * i)))
        for i in range(k)
    ]


def measure(name: str, fn: Any, sandbox: SlowCodeSandbox, gen_intervals: Any) -> dict[str, float]:
    sandbox.intervals.clear()
    t0 = time.perf_counter()
    trajs = fn()
    wall = time.perf_counter() - t0
    tokens = sum(t.num_model_tokens for t in trajs)
    calls = list(sandbox.intervals)
    return {
        "method": name,
        "trajectories": len(trajs),
        "calls": len(calls),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "sandbox_s": sum(b - a for a, b in calls),
        "sandbox_hidden_share": hidden_share(calls, gen_intervals()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=2, help="samples per problem")
    ap.add_argument("--max-calls", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--code-s", type=float, default=0.2, help="extra seconds every code call sleeps")
    ap.add_argument("--seq-limit", type=int, default=8, help="trajectories run by the sequential baseline")
    ap.add_argument("--repeats", type=int, default=1, help="runs per method; medians are reported")
    ap.add_argument("--vllm-dtypes", default="float32",
                    help="comma list; float32 is what model.dtype=auto picks on CPU, bfloat16 is faster there")
    ap.add_argument("--skip", default="", help="comma list of methods to skip: seq,hf,vllm")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    cfg = RootConfig()
    cfg.tool.max_calls = args.max_calls
    cfg.rollout.max_new_tokens = args.max_new_tokens
    cfg.rollout.batch_size = args.problems * args.n
    cfg.rollout.vllm.max_model_len = 2048
    cfg.sandbox.pool_size = 4
    sampling = SamplingSpec(temperature=1.0, top_p=1.0, seed=0)
    probs = problems(args.problems)

    from toolrl.sandbox import build_sandbox

    sandbox = SlowCodeSandbox(build_sandbox(cfg), args.code_s)
    sandbox.run("print(1)", timeout_s=5)
    results: dict[str, list[dict[str, float]]] = {}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    if not {"seq", "hf"} <= skip:
        from toolrl.rollout.hf_engine import build_hf_engine

        cfg.rollout.backend = "hf"
        hf = TimedEngine(build_hf_engine(cfg))
        hf.generate([], sampling)
        for r in range(args.repeats):
            if "seq" not in skip:
                seq_probs = probs[: max(1, args.seq_limit // args.n)]

                def sequential() -> list:
                    out = []
                    for p in seq_probs:
                        for i in range(args.n):
                            t = run_rollouts([p], engine=hf, sandbox=sandbox, cfg=cfg,
                                             sampling=SamplingSpec(1.0, 1.0, 0, seed=i), n=1)
                            out.extend(t)
                    return out

                hf.intervals.clear()
                results.setdefault("sequential", []).append(measure("sequential", sequential, sandbox, lambda: hf.intervals))
                log(f"sequential  run {r}: {results['sequential'][-1]}")
            if "hf" not in skip:
                hf.intervals.clear()
                batched = lambda: run_rollouts(probs, engine=hf, sandbox=sandbox, cfg=cfg, sampling=sampling, n=args.n)  # noqa: E731
                results.setdefault("hf_batched", []).append(measure("hf_batched", batched, sandbox, lambda: hf.intervals))
                log(f"hf batched  run {r}: {results['hf_batched'][-1]}")
        hf.inner.close()
        del hf

    if "vllm" not in skip:
        from toolrl.rollout.vllm_engine import build_vllm_engine

        cfg.rollout.backend = "vllm"
        for dtype in args.vllm_dtypes.split(","):
            name = "vllm_async" if dtype == "float32" else f"vllm_async_{dtype}"
            cfg.model.dtype = dtype
            t0 = time.perf_counter()
            vllm = build_vllm_engine(cfg)
            log(f"vllm engine start ({dtype}): {time.perf_counter() - t0:.1f} s")
            vllm.generate([], sampling)
            for r in range(args.repeats):
                run = lambda: run_rollouts(probs, engine=vllm, sandbox=sandbox, cfg=cfg, sampling=sampling, n=args.n)  # noqa: E731
                res = measure(name, run, sandbox, lambda: vllm.last_rollout_stats.gen_intervals)
                results.setdefault(name, []).append(res)
                log(f"{name} run {r}: {res}")
            vllm.close()
    sandbox.close()

    table = []
    for name, runs in results.items():
        row: dict[str, Any] = {"method": name, "runs": len(runs)}
        for key in ("trajectories", "calls", "tokens", "wall_s", "tokens_per_s", "sandbox_s", "sandbox_hidden_share"):
            row[key] = statistics.median(r[key] for r in runs)
        table.append(row)
    base = next((r["tokens_per_s"] for r in table if r["method"] == "hf_batched"), None)
    for row in table:
        row["throughput_vs_hf_batched"] = row["tokens_per_s"] / base if base else None
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'method':<20} {'traj':>5} {'calls':>6} {'tokens':>7} {'wall s':>8} {'tok/s':>8} {'sandbox s':>10} "
          f"{'hidden':>7} {'vs hf':>7}")
    for r in table:
        ratio = f"{r['throughput_vs_hf_batched']:.2f}x" if r["throughput_vs_hf_batched"] else "-"
        print(f"{r['method']:<20} {r['trajectories']:>5.0f} {r['calls']:>6.0f} {r['tokens']:>7.0f} {r['wall_s']:>8.1f} "
              f"{r['tokens_per_s']:>8.1f} {r['sandbox_s']:>10.2f} {100 * r['sandbox_hidden_share']:>6.0f}% {ratio:>7}")


if __name__ == "__main__":
    main()
