"""Grading worker process: reads JSON requests on stdin, answers one JSON line each on stdout.

Runs in its own process so the parent can bound a comparison by killing it: sympy can spend minutes in C
code (e.g. a huge power) where no signal reaches it. A SIGALRM timer (this is the worker's main thread, where
signals work) ends ordinary slow comparisons without losing the warm process.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout()


def main() -> None:
    # A pathological expression must not take the machine's memory with it.
    limit = 4 * 1024**3
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # silences "timeout is disabled" warnings
    from toolrl.reward.equivalence import math_verify_equal

    math_verify_equal("1", "1")  # warm the parsers before declaring readiness
    signal.signal(signal.SIGALRM, _alarm)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        status, equal = "ok", False
        signal.setitimer(signal.ITIMER_REAL, float(req["timeout"]))
        try:
            equal = math_verify_equal(req["pred"], req["gold"])
        except _Timeout:
            status = "timeout"
        except Exception as e:  # a parser bug on odd input means "not shown equal"
            status = f"error: {type(e).__name__}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps({"id": req["id"], "equal": equal, "status": status}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
