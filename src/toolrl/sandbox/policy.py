"""What the local sandbox enforces, as one plain record that the parent sends to each worker process."""

from __future__ import annotations

import json
import os
import random
import sys
import sysconfig
from dataclasses import asdict, dataclass, field

from toolrl.config.schema import SandboxConfig

# Protections a worker tries to set up; `required` ones missing make it refuse (require_isolation=true).
PROTECTIONS = ("netns", "mountns", "pidns", "uid", "rlimits")

_UID_BLOCK = 4096  # uids per sandbox instance: one per pool slot plus one per live stateful session


@dataclass
class Policy:
    memory_mb: int = 1024  # on top of what the pre-imported libraries already map
    cpu_s: int = 10
    max_processes: int = 16
    max_file_mb: int = 16
    max_capture_bytes: int = 65536
    preload: list[str] = field(default_factory=list)
    hide_paths: list[str] = field(default_factory=list)
    expose_paths: list[str] = field(default_factory=list)  # re-exposed inside hidden paths (the Python install)
    tmpfs_mb: int = 64  # size of each empty replacement directory (RAM)
    require_isolation: bool = True
    stateful: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls(**json.loads(text))


def python_paths() -> list[str]:
    """Directories the sandboxed interpreter needs for lazy imports (stdlib, site-packages), deduplicated."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    real = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    # keep only the outermost directories: a bind of /a also shows /a/b
    return sorted(p for p in real if not any(p != q and p.startswith(q + os.sep) for q in real))


def policy_from_config(cfg: SandboxConfig, cwd: str | None = None) -> Policy:
    hide = [os.path.realpath(p) for p in cfg.hide_paths]
    here = os.path.realpath(cwd or os.getcwd())
    if here != "/":
        hide.append(here)  # the project toolrl runs from: sources, checkpoints, run directories
    return Policy(
        memory_mb=cfg.memory_mb,
        cpu_s=cfg.cpu_s,
        max_processes=cfg.max_processes,
        max_file_mb=cfg.max_file_mb,
        max_capture_bytes=cfg.max_capture_bytes,
        preload=list(cfg.preload),
        hide_paths=sorted(set(hide)),
        expose_paths=python_paths(),
        tmpfs_mb=max(64, 4 * cfg.max_file_mb),
        require_isolation=cfg.require_isolation,
        stateful=cfg.stateful,
    )


def pick_uid_base(explicit: int | None) -> int:
    """A block of unused uids; random by default so two sandboxes on one host never share a process limit."""
    if explicit is not None:
        return explicit
    return 200_000 + random.SystemRandom().randrange(0, 100_000) * _UID_BLOCK


def uid_block_size() -> int:
    return _UID_BLOCK
