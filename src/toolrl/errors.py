"""User-facing errors: the CLI prints them as one `error:` line and one `hint:` line, no traceback."""

from __future__ import annotations


class ToolrlError(Exception):
    """A known failure caused by input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(ToolrlError):
    """A configuration key, type or value is wrong."""


class DataError(ToolrlError):
    """A data set or benchmark cannot be found or read."""


class ModelError(ToolrlError):
    """A model cannot be found or loaded."""


class SandboxUnavailableError(ToolrlError):
    """The sandbox cannot run with the requested protections on this host."""
