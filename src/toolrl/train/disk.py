"""What a training run leaves on disk: one line naming every kept directory and its size."""

from __future__ import annotations

from pathlib import Path

from toolrl.train import checkpoint as ckpt


def human(n: float) -> str:
    """
    >>> human(1536), human(2.6e9)
    ('1.5 KB', '2.4 GB')
    """
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def kept_items(run_dir: Path) -> tuple[list[tuple[str, int, str]], int]:
    """(name, bytes, note) for each part of a run directory (models, checkpoints, snapshots, the rest), and the
    bytes train.prune_on_finish freed."""
    items: list[tuple[str, int, str]] = []
    freed = 0
    for name, note in (("final", "final model"), ("sft/model", "SFT model")):
        if (run_dir / name).is_dir():
            items.append((f"{name}/", ckpt.tree_size(run_dir / name), note))
    root = run_dir / "checkpoints"
    for path in sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else ():
        pruned = ckpt.read_state(path).get("pruned") if ckpt.is_complete(path) else None
        freed += int((pruned or {}).get("freed_bytes", 0))
        if pruned is None:
            note = "resumable"
        elif pruned.get("policy_weights") == ckpt.PRUNED_POLICY:
            note = "resume state, weights in final/, no optimizer states"
        else:
            note = "weights, no optimizer states"
        items.append((f"checkpoints/{path.name}/", ckpt.tree_size(path), note))
    snaps = sorted(p for p in (run_dir / "snapshots").glob("step_*") if p.is_dir())
    if snaps:
        items.append(("snapshots/", sum(ckpt.tree_size(p) for p in snaps), f"{len(snaps)} weight snapshots"))
    rest = ckpt.tree_size(run_dir) - sum(size for _, size, _ in items)
    items.append(("other", rest, "config, metrics, rollouts"))
    return items, freed


def kept_summary(run_dir: Path) -> str:
    """One line: the total kept, each part with its size, and what pruning freed."""
    items, freed = kept_items(run_dir)
    total = sum(size for _, size, _ in items)
    parts = " · ".join(f"{name} {human(size)} ({note})" for name, size, note in items)
    tail = f"; pruned {human(freed)} (train.prune_on_finish)" if freed else ""
    return f"kept {human(total)}: {parts}{tail}"
