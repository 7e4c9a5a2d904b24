"""What the local sandbox enforces, as one plain record that the parent sends to each worker process, and the
pure rules that turn the layers a host allows into an isolation level.
"""

from __future__ import annotations

import json
import os
import random
import sys
import sysconfig
from dataclasses import asdict, dataclass, field

from toolrl.config.schema import SandboxConfig
from toolrl.errors import ConfigError

LEVELS = ("none", "contained", "full")  # weakest first

_UID_BLOCK = 4096  # uids per sandbox instance: one per pool slot plus one per live stateful session

# System files and directories Python and its libraries need, read-only. Nothing else of the host is visible.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf", "/etc/alternatives",
             "/etc/mime.types")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_WARNED_ALIAS: list[bool] = []


@dataclass
class Policy:
    memory_mb: int = 1024  # on top of what the pre-imported libraries already map
    cpu_s: int = 10
    max_processes: int = 16
    max_file_mb: int = 16
    max_capture_bytes: int = 65536
    preload: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)  # the allowlist (real paths on the host)
    hide_paths: list[str] = field(default_factory=list)  # covered by empty directories inside the allowlist
    tmpfs_mb: int = 64  # private /tmp (and working directory) of each execution
    isolation: str = "contained"
    namespaces: bool = True
    uid_base: int = 0
    uid_count: int = _UID_BLOCK
    stateful: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls(**json.loads(text))


def python_paths() -> list[str]:
    """Directories the sandboxed interpreter needs for lazy imports (stdlib, site-packages), deduplicated.

    A virtual environment contributes its own directory only, never the project around it.
    """
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    return _outermost(p for p in paths if os.path.isdir(p))


def _outermost(paths: object) -> list[str]:
    real = {os.path.realpath(p) for p in paths}  # type: ignore[attr-defined]
    # keep only the outermost directories: a bind of /a also shows /a/b
    return sorted(p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real))


def allowlist(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every host path the sandboxed code may read: Python, system libraries, a few /etc files, ``extra``."""
    system = [p for p in SYSTEM_PATHS if os.path.isdir(p) and not os.path.islink(p)]
    files = [p for p in ETC_FILES if os.path.lexists(p)]
    user = [p for p in extra if os.path.exists(p)]
    return sorted(set(_outermost([*python_paths(), *system, *user]) + files))


def resolve_isolation(cfg: SandboxConfig) -> str:
    """The minimum level to enforce; the deprecated ``require_isolation`` still works, with a warning."""
    if cfg.require_isolation is None:
        return cfg.isolation
    level = "contained" if cfg.require_isolation else "none"
    if not _WARNED_ALIAS:
        _WARNED_ALIAS.append(True)
        sys.stderr.write(
            f"toolrl sandbox: WARNING: sandbox.require_isolation is deprecated; using sandbox.isolation={level} "
            f"(set that instead)\n"
        )
    return level


# Each execution gets its own of these, so a host path inside them cannot be shown (/tmp can: view.enter_private
# puts allowlisted trees under /tmp back over the fresh one).
_PRIVATE_DIRS = ("/var/tmp", "/dev/shm", "/proc", "/dev")


def policy_from_config(cfg: SandboxConfig, cwd: str | None = None) -> Policy:
    del cwd  # the project is outside the allowlist like every other host path
    for p in cfg.allow_paths:
        real = os.path.realpath(p)
        if any(real == d or real.startswith(d + "/") for d in _PRIVATE_DIRS):
            raise ConfigError(
                f"sandbox.allow_paths: '{p}' is inside {real.split('/')[1] and '/' + real.split('/')[1]}, "
                "which each execution gets a fresh private copy of",
                "move the directory elsewhere (e.g. under your home or a data volume)",
            )
    return Policy(
        memory_mb=cfg.memory_mb,
        cpu_s=cfg.cpu_s,
        max_processes=cfg.max_processes,
        max_file_mb=cfg.max_file_mb,
        max_capture_bytes=cfg.max_capture_bytes,
        preload=list(cfg.preload),
        read_only=allowlist([os.path.realpath(p) for p in cfg.allow_paths]),
        hide_paths=sorted({os.path.realpath(p) for p in cfg.hide_paths}),
        tmpfs_mb=max(64, 4 * cfg.max_file_mb),
        isolation=resolve_isolation(cfg),
        namespaces=cfg.namespaces,
        stateful=cfg.stateful,
    )


def level_of(layers: dict[str, str]) -> str:
    """The isolation level a set of working layers gives ("ok..." = working).

    >>> level_of({"netns": "ok", "view": "ok", "pidns": "ok", "seccomp": "ok"})
    'full'
    >>> level_of({"netns": "off", "view": "off", "seccomp": "ok", "landlock": "ok (ABI 7)"})
    'contained'
    >>> level_of({"seccomp": "ok", "landlock": "off"})
    'none'
    """
    on = {k for k, v in layers.items() if v.startswith("ok")}
    no_network = "netns" in on or "seccomp" in on
    files = "view" in on or "landlock" in on
    if {"netns", "view", "pidns"} <= on:
        return "full"
    return "contained" if no_network and files else "none"


def meets(level: str, required: str) -> bool:
    return LEVELS.index(level) >= LEVELS.index(required)


def pick_uid_base(explicit: int | None) -> int:
    """A block of unused uids; random by default so two sandboxes on one host never share a process limit."""
    if explicit is not None:
        return explicit
    return 200_000 + random.SystemRandom().randrange(0, 100_000) * _UID_BLOCK


def uid_block_size() -> int:
    return _UID_BLOCK
