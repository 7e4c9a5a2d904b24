"""Atomic checkpoints: written to a temporary directory, fsynced, renamed; ``checkpoints/latest`` is updated last.

A kill at any moment leaves ``latest`` naming a complete checkpoint (or no checkpoint at all, before the first
one): the rename of a fully written directory and the replace of the one-line ``latest`` file are both atomic.
Leftover temporary directories of a killed save are removed by the next save. This module does no training:
the trainer hands it a function that fills the directory (DeepSpeed engine states, RNG, trainer state).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

LATEST = "latest"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
_TMP_PREFIX = ".tmp-"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_dir_for(root: Path, step: int) -> Path:
    """Where every rank writes its part of the checkpoint of ``step`` before it is published."""
    return root / f"{_TMP_PREFIX}{step_dir_name(step)}"


def begin(root: Path, step: int) -> Path:
    """A fresh, empty temporary directory for the checkpoint of ``step`` (stale leftovers removed)."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_dir_for(root, step)
    tmp.mkdir(parents=True)
    return tmp


def publish(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Finish the checkpoint written into ``tmp_dir_for(root, step)``: state file, fsync, rename, update latest."""
    tmp = tmp_dir_for(root, step)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    (tmp / COMPLETE).write_text(str(step))
    _fsync_tree(tmp)
    final = root / step_dir_name(step)
    if final.exists():  # a re-run of the same step after a resume: the new one replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    pointer_tmp = root / f"{LATEST}.tmp"
    with open(pointer_tmp, "w") as fh:
        fh.write(final.name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, root / LATEST)
    _fsync_dir(root)
    prune(root, keep)
    return final


def save(root: Path, step: int, state: dict[str, Any], write: Callable[[Path], None], keep: int = 2) -> Path:
    """One-process convenience: ``write(tmp_dir)`` fills the directory, then it is published. If ``write`` raises,
    nothing is published and ``latest`` still names the previous checkpoint."""
    tmp = begin(root, step)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish(root, step, state, keep)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / STATE_FILE).is_file()


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint: the one ``latest`` names, else the highest complete step directory."""
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if cand.name and is_complete(cand):
            return cand
    found = sorted((p for p in root.glob("step_*") if p.is_dir() and is_complete(p)), key=lambda p: p.name)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` complete checkpoints (never the one ``latest`` names)."""
    newest = latest(root)
    done = sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: p.name)
    for old in done[: max(0, len(done) - max(1, keep))]:
        if newest is None or old.resolve() != newest.resolve():
            shutil.rmtree(old, ignore_errors=True)


# -- RNG state ----------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states of this process."""
    import numpy as np
    import torch

    out: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
