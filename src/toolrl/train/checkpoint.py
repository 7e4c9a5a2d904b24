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


# -- pruning a finished run ---------------------------------------------------------------------------------

PRUNED_POLICY = "final"  # trainer_state.json "pruned.policy_weights": the policy's weights are RUN/final
_OPTIM_GLOB = "*optim_states.pt"  # ZeRO 1-3: one optimizer partition per rank
_ZERO3_GLOB = "zero_pp_rank_*_model_states.pt"  # ZeRO-3: weights live in the partitions


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path / STATE_FILE)


def strip_optimizer_states(ds_dir: Path) -> int:
    """Remove the optimizer states from one DeepSpeed checkpoint directory, keeping the module weights; returns
    the bytes freed. ZeRO-0 keeps them inside ``mp_rank_00_model_states.pt`` (rewritten without them, atomically);
    ZeRO 1-2 in ``*optim_states.pt`` files (deleted). ZeRO-3 is left whole: its weights live in those files."""
    import torch

    freed = 0
    for tag_dir in (d for d in ds_dir.iterdir() if d.is_dir()) if ds_dir.is_dir() else ():
        if any(tag_dir.glob(_ZERO3_GLOB)):
            continue
        for f in tag_dir.glob(_OPTIM_GLOB):
            freed += f.stat().st_size
            f.unlink()
        module_file = tag_dir / "mp_rank_00_model_states.pt"
        if module_file.is_file():
            state = torch.load(module_file, map_location="cpu", weights_only=False, mmap=True)
            if state.get("optimizer") is not None:
                before = module_file.stat().st_size
                state["optimizer"] = None
                tmp = module_file.with_name(module_file.name + ".tmp")
                torch.save(state, tmp)
                del state
                os.replace(tmp, module_file)
                freed += before - module_file.stat().st_size
    return freed


def prune_finished(root: Path, final_dir: Path) -> int:
    """After a run wrote ``final_dir``: the newest checkpoint gives up its policy weights (the same as final/)
    and every kept checkpoint its optimizer states. Returns the bytes freed.

    Each checkpoint's trainer_state.json records ``pruned`` *before* any file goes, so a crash half-way leaves
    checkpoints that resume reads correctly (weights from final/, fresh optimizer). Resume stays possible: the
    data position, RNG, learning-rate schedule and the critic's weights are kept.
    """
    newest = latest(root)
    if newest is None or not (final_dir / "config.json").is_file():
        return 0
    freed = 0
    for path in sorted(p for p in root.glob("step_*") if p.is_dir() and is_complete(p)):
        state = read_state(path)
        is_newest = path.resolve() == newest.resolve()
        before = tree_size(path)
        record = dict(state.get("pruned") or {})
        if is_newest:
            record["policy_weights"] = PRUNED_POLICY
        _write_state(path, {**state, "pruned": record})
        if is_newest:
            shutil.rmtree(path / "policy", ignore_errors=True)
        for ds_dir in (path / "policy", path / "critic"):
            strip_optimizer_states(ds_dir)
        freed_here = max(0, before - tree_size(path))
        record["freed_bytes"] = int(record.get("freed_bytes", 0)) + freed_here
        _write_state(path, {**state, "pruned": record})
        freed += freed_here
    _fsync_dir(root)
    return freed
