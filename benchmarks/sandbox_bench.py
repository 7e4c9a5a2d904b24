"""Sandbox throughput and latency: the local backend against a naive fresh `python -c` per execution.

Run: OMP_NUM_THREADS=1 python benchmarks/sandbox_bench.py [--quick] [--json]
Prints executions/s and median/p99 latency for three snippets at concurrency 1 and 16, the ratios against
the baseline measured in the same run, and a lost-request check at concurrency 64. Targets: sympy median
>= 20x lower than baseline, >= 150 exec/s for print(1), zero lost requests at concurrency 64.

`--modes` (root only) measures every isolation mode instead: root (full), root without CAP_SYS_ADMIN (full
through a user namespace; contained when user namespaces are blocked as by Docker's default profile), an
unprivileged uid (full in a user namespace; contained without namespaces). Each mode's sympy ratio is against
a fresh interpreter started in that same mode and run; the table also shows what each layer costs per
execution (median microseconds inside the forked child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

SNIPPETS = {
    "print": "print(1)",
    "sympy": "import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 5*x + 6, x))",
    "numpy": "import numpy as np\na = np.arange(10000, dtype=float).reshape(100, 100)\nprint(float((a @ a.T).trace()))",
}


def naive(code: str) -> tuple[bool, float]:
    """The baseline: a fresh interpreter per execution, same imports, no isolation."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return p.returncode == 0, time.perf_counter() - t


def measure(fn: Callable[[str], tuple[bool, float]], code: str, n: int, concurrency: int) -> dict[str, float]:
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        out = list(ex.map(lambda _: fn(code), range(n)))
    wall = time.perf_counter() - t
    lat = sorted(d for _, d in out)
    return {
        "n": n,
        "ok": sum(ok for ok, _ in out),
        "exec_per_s": n / wall,
        "median_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
    }


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER_KEYS = ("private_mounts", "private_dir", "rlimits", "uid_and_no_new_privs", "landlock", "seccomp")


def inner(n: int, n_naive: int) -> dict:
    """One mode, measured from inside it: sympy and print(1) at concurrency 1, layer costs, the baseline."""
    from toolrl.config.schema import SandboxConfig
    from toolrl.sandbox.local import LocalSandbox

    ns = os.environ.get("TOOLRL_SANDBOX_NAMESPACES", "1") != "0"
    t = time.perf_counter()
    sb = LocalSandbox(SandboxConfig(pool_size=1, namespaces=ns, isolation="none"))
    start_s = time.perf_counter() - t
    worker = sb._workers[0]
    assert worker is not None
    out: dict = {"level": sb.level, "layers": sb.protections, "start_s": start_s}
    try:
        for name in ("print", "sympy"):
            code = SNIPPETS[name]
            lat, lock = [], {k: [] for k in LAYER_KEYS}
            for _ in range(n + 2):
                t0 = time.perf_counter()
                reply = worker.request({"op": "run", "code": code, "timeout": 10.0, "uid": sb.uid_base}, 30)
                lat.append(time.perf_counter() - t0)
                assert reply["kind"] == "ok", reply
                for k, v in (reply.get("lock_us") or {}).items():
                    lock.setdefault(k, []).append(v)
            lat = lat[2:]  # the first uses of a worker path
            out[name] = {"median_ms": statistics.median(lat) * 1000,
                         "lock_us": {k: statistics.median(v) for k, v in lock.items() if v}}
        base = measure(naive, SNIPPETS["sympy"], n_naive, 1)
        out["naive_sympy_median_ms"] = base["median_ms"]
        out["sympy_ratio"] = base["median_ms"] / out["sympy"]["median_ms"]
    finally:
        sb.close()
    return out


def across_modes(quick: bool, as_json: bool) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from pathlib import Path

    from sandbox_support import modes

    n, n_naive = (15, 4) if quick else (40, 8)
    argv = [sys.executable, os.path.abspath(__file__), "--inner", str(n), str(n_naive)]
    env = {"PYTHONPATH": os.path.join(ROOT, "src")}
    results = {}
    runs = [("root", None), *((m, m) for m in modes.MODES)]
    for label, mode in runs:
        if mode is None:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                               env={**os.environ, **env, "TOOLRL_SANDBOX_NAMESPACES": "1"})
        else:
            p = modes.run(mode, argv, cwd=Path(ROOT), timeout=900, extra_env=env)
        try:
            results[label] = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            results[label] = {"error": (p.stdout + p.stderr)[-800:]}
    if as_json:
        print(json.dumps(results, indent=2))
        return
    who = {"root": "root", "nocap": "root, no CAP_SYS_ADMIN", "nocap-docker": "root, no CAP_SYS_ADMIN, no userns",
           "user": "unprivileged uid", "user-maskedproc": "unprivileged uid, /proc masked",
           "user-nons": "unprivileged uid, no namespaces"}
    print(f"{'mode':34} {'level':9} | {'print ms':>8} {'sympy ms':>8} {'fresh ms':>8} {'ratio':>6} | layer costs (median us)")
    for label, r in results.items():
        if "error" in r:
            print(f"{who.get(label, label):34} ERROR {r['error']!r}")
            continue
        costs = ", ".join(f"{k} {v:.0f}" for k, v in r["print"]["lock_us"].items())
        print(f"{who.get(label, label):34} {r['level']:9} | {r['print']['median_ms']:8.1f} {r['sympy']['median_ms']:8.1f} "
              f"{r['naive_sympy_median_ms']:8.1f} {r['sympy_ratio']:6.1f} | {costs}")
    ok = all("error" not in r and r["sympy_ratio"] >= 20 for r in results.values())
    print(f"target sympy_median_ratio>=20 in every mode: {'PASS' if ok else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer executions")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pool-size", type=int, default=4)
    ap.add_argument("--modes", action="store_true", help="measure every isolation mode (needs root)")
    ap.add_argument("--inner", nargs=2, type=int, metavar=("N", "N_NAIVE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, os.path.join(ROOT, "src"))
    if args.inner:
        print(json.dumps(inner(*args.inner)))
        return
    if args.modes:
        across_modes(args.quick, args.json)
        return
    from toolrl.config.schema import SandboxConfig
    from toolrl.sandbox.local import LocalSandbox
    from toolrl.types import ExecKind

    n_local = 100 if args.quick else 400
    n_naive = 8 if args.quick else 24
    t = time.perf_counter()
    sb = LocalSandbox(SandboxConfig(pool_size=args.pool_size))
    start_s = time.perf_counter() - t

    def local(code: str) -> tuple[bool, float]:
        t0 = time.perf_counter()
        r = sb.run(code, timeout_s=10)
        return r.kind == ExecKind.OK, time.perf_counter() - t0

    rows = []
    try:
        for name, code in SNIPPETS.items():
            local(code)  # first use of a worker path
            for conc in (1, 16):
                base = measure(naive, code, n_naive, min(conc, 2) if conc > 1 else 1)
                mine = measure(local, code, n_local, conc)
                rows.append({"snippet": name, "concurrency": conc, "local": mine, "naive": base,
                             "median_ratio": base["median_ms"] / mine["median_ms"],
                             "throughput_ratio": mine["exec_per_s"] / base["exec_per_s"]})
        burst = measure(local, SNIPPETS["print"], 64 * (2 if args.quick else 4), 64)
    finally:
        sb.close()
    lost = burst["n"] - burst["ok"]
    sympy1 = next(r for r in rows if r["snippet"] == "sympy" and r["concurrency"] == 1)
    print16 = next(r for r in rows if r["snippet"] == "print" and r["concurrency"] == 16)
    targets = {
        "sympy_median_ratio>=20": sympy1["median_ratio"] >= 20,
        "print_exec_per_s>=150": print16["local"]["exec_per_s"] >= 150,
        "lost_at_64==0": lost == 0,
    }
    report = {"pool_size": args.pool_size, "start_s": start_s, "rows": rows, "burst64": burst, "lost": lost,
              "targets": targets, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"local pool of {args.pool_size} started in {start_s:.1f} s on {os.cpu_count()} CPUs "
          "(naive baseline at concurrency 16 runs 2 at a time: more only thrashes 2 cores)")
    print(f"{'snippet':8} {'conc':>4} | {'local/s':>8} {'med ms':>7} {'p99 ms':>7} | {'naive/s':>8} {'med ms':>7} "
          f"{'p99 ms':>7} | {'median x':>8} {'thru x':>7}")
    for r in rows:
        lo, na = r["local"], r["naive"]
        print(f"{r['snippet']:8} {r['concurrency']:>4} | {lo['exec_per_s']:8.1f} {lo['median_ms']:7.1f} "
              f"{lo['p99_ms']:7.1f} | {na['exec_per_s']:8.1f} {na['median_ms']:7.1f} {na['p99_ms']:7.1f} | "
              f"{r['median_ratio']:8.1f} {r['throughput_ratio']:7.1f}")
    print(f"concurrency 64 burst: {burst['n']} requests, {lost} lost/failed, {burst['exec_per_s']:.1f} exec/s, "
          f"p99 {burst['p99_ms']:.0f} ms")
    for k, ok in targets.items():
        print(f"target {k}: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
