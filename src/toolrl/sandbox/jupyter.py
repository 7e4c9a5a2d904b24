"""`sandbox.backend=jupyter` is not provided: stateful sessions come from the local backend instead.

Reason (docs/sandbox.md): a Jupyter kernel speaks ZeroMQ over TCP, which the per-worker network namespace
removes, and a kernel cannot be forked from a warm worker, so it would give up both the isolation and the
speed of `local`. `sandbox.stateful=true` with `local` keeps variables between the calls of a trajectory.
"""

from __future__ import annotations

from toolrl.config.schema import SandboxConfig
from toolrl.errors import SandboxUnavailableError


class JupyterSandbox:
    def __init__(self, cfg: SandboxConfig) -> None:
        raise SandboxUnavailableError(
            "sandbox.backend=jupyter is not available in toolrl",
            "use sandbox.backend=local sandbox.stateful=true (isolated notebook-like sessions) or sandbox.backend=e2b",
        )
