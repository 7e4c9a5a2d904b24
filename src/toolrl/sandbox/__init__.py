"""Sandboxes that run model-written code: `build_sandbox(cfg)` picks the backend named by `sandbox.backend`.

Backends are imported only when chosen, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from toolrl.errors import ConfigError
from toolrl.sandbox.base import ExecKind, ExecResult, Sandbox
from toolrl.sandbox.results import count_kinds

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

__all__ = ["ExecKind", "ExecResult", "Sandbox", "build_sandbox", "count_kinds", "BACKENDS"]

# backend name -> "module:factory"; each factory takes the RootConfig
BACKENDS: dict[str, str] = {
    "local": "toolrl.sandbox.local:LocalSandbox",
    "subprocess": "toolrl.sandbox.local:SubprocessSandbox",
    "jupyter": "toolrl.sandbox.jupyter:JupyterSandbox",
    "e2b": "toolrl.sandbox.e2b:E2BSandbox",
}


def _factory(name: str) -> Callable[..., Any]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown sandbox backend '{name}'", f"choose one of: {', '.join(BACKENDS)}"
        ) from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def build_sandbox(cfg: "RootConfig", *, backend: str | None = None) -> Sandbox:
    """Start the configured sandbox. Raises SandboxUnavailableError when it cannot run as configured."""
    return _factory(backend or cfg.sandbox.backend)(cfg.sandbox)
