"""Multi-turn tool rollouts with sampling, measured in the same run: the older batched hf loop, the hf engine with
continuous batching, and (optionally) vLLM.

One batch of trajectories (default 4 problems x 4 samples = 16, C=2, the embedded SmolLM2-135M-Instruct in float32,
sampling at temperature 1) with the real local sandbox, where every code call also sleeps ``--code-s`` (0.2 s)
inside the sandbox, standing in for slower code.

- hf_static: the older synchronous loop, reproduced here as the baseline: every turn the whole batch generates until
  its longest row is done, then that turn's calls run;
- hf_continuous: ``toolrl.rollout.run_rollouts`` with the hf engine (``rollout.hf_mode=continuous``): finished rows
  leave the batch, waiting ones join, and code runs while the others decode;
- vllm: ``run_rollouts`` with the vllm engine (``--with-vllm``).

Reported per method (medians over ``--repeats``): generated model tokens, wall time, tokens/s, sandbox time and the
share of it hidden behind generation, and the wall-time and throughput ratios against hf_static. Model load and
engine start are outside the timed region.

    OMP_NUM_THREADS=1 python benchmarks/rollout_bench.py [--problems 4 --n 4 --repeats 1 --with-vllm --json]
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
from toolrl.rollout import run_rollouts  # noqa: E402
from toolrl.rollout.agent import TrajectoryState  # noqa: E402
from toolrl.rollout.async_runner import RolloutStats, hidden_share  # noqa: E402
from toolrl.rollout.engine import SamplingSpec  # noqa: E402
from toolrl.rollout.loop import make_states, safe_run  # noqa: E402
from toolrl.types import Problem, Trajectory  # noqa: E402


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


def static_loop(problems: list[Problem], engine: Any, sandbox: Any, cfg: RootConfig, sampling: SamplingSpec, n: int,
                intervals: list[tuple[float, float]]) -> list[Trajectory]:
    """The synchronous loop the hf engine used to run: each turn, the whole batch generates (every row waits for the
    longest), then every pending call runs at once."""
    from concurrent.futures import ThreadPoolExecutor

    from toolrl.rollout.engine import generate

    states = make_states(problems, cfg, engine, n)
    with ThreadPoolExecutor(max_workers=cfg.sandbox.pool_size) as pool:
        active: list[TrajectoryState] = list(states)
        while active:
            live = [(s, r) for s in active if (r := s.next_request()) is not None]
            if not live:
                break
            t0 = time.perf_counter()
            outs = generate(engine, [r for _, r in live], sampling)
            intervals.append((t0, time.perf_counter()))
            calls = [(s, code) for (s, _), out in zip(live, outs)
                     if (code := s.on_generated(out, gen_time_s=intervals[-1][1] - t0)) is not None]
            futures = [(s, pool.submit(safe_run, sandbox, code, cfg.tool.timeout_s, s.session_id)) for s, code in calls]
            for s, fut in futures:
                s.on_executed(fut.result())
            active = [s for s, _ in live if not s.done]
    return [s.traj for s in states]


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
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--n", type=int, default=4, help="samples per problem")
    ap.add_argument("--max-calls", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--code-s", type=float, default=0.2, help="extra seconds every code call sleeps")
    ap.add_argument("--admit-every", type=int, default=8, help="rollout.hf_admit_every for hf_continuous")
    ap.add_argument("--repeats", type=int, default=1, help="runs per method; medians are reported")
    ap.add_argument("--with-vllm", action="store_true", help="also measure the vllm engine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cfg = RootConfig()
    cfg.tool.max_calls = args.max_calls
    cfg.rollout.max_new_tokens = args.max_new_tokens
    cfg.rollout.batch_size = args.problems * args.n
    cfg.rollout.hf_admit_every = args.admit_every
    cfg.rollout.vllm.max_model_len = 2048
    cfg.sandbox.pool_size = 4
    sampling = SamplingSpec(temperature=1.0, top_p=1.0, seed=0)
    probs = problems(args.problems)

    from toolrl.sandbox import build_sandbox

    sandbox = SlowCodeSandbox(build_sandbox(cfg), args.code_s)
    sandbox.run("print(1)", timeout_s=5)
    results: dict[str, list[dict[str, float]]] = {}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    from toolrl.rollout.hf_engine import HFEngine, build_hf_engine

    cfg.rollout.backend = "hf"
    cont = build_hf_engine(cfg)
    static = HFEngine(cont.model, cont.tokenizer, cont.eos_token_ids, batch_size=cfg.rollout.batch_size, mode="static")
    for r in range(args.repeats):  # alternate the methods so load from other jobs hits both alike
        for name in ("hf_static", "hf_continuous"):
            spec = SamplingSpec(sampling.temperature, sampling.top_p, 0, seed=r)
            if name == "hf_static":
                gen: list[tuple[float, float]] = []
                run = lambda: static_loop(probs, static, sandbox, cfg, spec, args.n, gen)  # noqa: E731
                res = measure(name, run, sandbox, lambda: gen)
            else:
                stats = RolloutStats()
                run = lambda: run_rollouts(probs, engine=cont, sandbox=sandbox, cfg=cfg, sampling=spec, n=args.n,  # noqa: E731
                                           stats=stats)
                res = measure(name, run, sandbox, lambda: stats.gen_intervals)
            results.setdefault(name, []).append(res)
            log(f"{name} run {r}: {res}")
    cont.close()

    if args.with_vllm:
        from toolrl.rollout.vllm_engine import build_vllm_engine

        cfg.rollout.backend = "vllm"
        t0 = time.perf_counter()
        vllm = build_vllm_engine(cfg)
        log(f"vllm engine start: {time.perf_counter() - t0:.1f} s")
        for r in range(args.repeats):
            stats = RolloutStats()
            spec = SamplingSpec(sampling.temperature, sampling.top_p, 0, seed=r)
            run = lambda: run_rollouts(probs, engine=vllm, sandbox=sandbox, cfg=cfg, sampling=spec, n=args.n,  # noqa: E731
                                       stats=stats)
            res = measure("vllm", run, sandbox, lambda: stats.gen_intervals)
            results.setdefault("vllm", []).append(res)
            log(f"vllm run {r}: {res}")
        vllm.close()
    sandbox.close()

    table = []
    for name, runs in results.items():
        row: dict[str, Any] = {"method": name, "runs": len(runs)}
        for key in ("trajectories", "calls", "tokens", "wall_s", "tokens_per_s", "sandbox_s", "sandbox_hidden_share"):
            row[key] = statistics.median(r[key] for r in runs)
        table.append(row)
    base = next(r for r in table if r["method"] == "hf_static")
    for row in table:
        row["throughput_vs_hf_static"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["wall_speedup_vs_hf_static"] = base["wall_s"] / row["wall_s"]
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'method':<15} {'traj':>5} {'calls':>6} {'tokens':>7} {'wall s':>8} {'tok/s':>8} {'sandbox s':>10} "
          f"{'hidden':>7} {'tok/s vs static':>16} {'wall vs static':>15}")
    for r in table:
        print(f"{r['method']:<15} {r['trajectories']:>5.0f} {r['calls']:>6.0f} {r['tokens']:>7.0f} {r['wall_s']:>8.1f} "
              f"{r['tokens_per_s']:>8.1f} {r['sandbox_s']:>10.2f} {100 * r['sandbox_hidden_share']:>6.0f}% "
              f"{r['throughput_vs_hf_static']:>15.2f}x {r['wall_speedup_vs_hf_static']:>14.2f}x")


if __name__ == "__main__":
    main()
