"""Training checkpoints as Hugging Face model directories, so that every checkpoint can be evaluated.

A checkpoint (``checkpoint.py``) holds DeepSpeed states. Under ZeRO 0-2, ``policy/state/mp_rank_00_model_states.pt``
carries the whole module state dict; under ZeRO-3 each rank's partition files carry a slice, and DeepSpeed's own
``get_fp32_state_dict_from_zero_checkpoint`` merges them. The model's config and tokenizer are saved with every
checkpoint (``model_config/``); for checkpoints written before that, the run's starting model provides them.
A finished, pruned run's last checkpoint names ``final/`` as its weights (``checkpoint.PRUNED_POLICY``).

``model_dir_for(path)`` accepts a run directory, its ``checkpoints/`` directory or one checkpoint, and returns a
loadable model directory: ``final/`` or a snapshot as they are, a checkpoint exported once into a cache.
torch and transformers are imported inside the functions; deepspeed only for ZeRO-3.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from toolrl.errors import ModelError
from toolrl.train import checkpoint as ckpt

POLICY = "policy"
TAG = "state"  # the DeepSpeed tag every checkpoint is saved under (runner._save_checkpoint)
MODEL_CONFIG = "model_config"
_MODULE_FILE = "mp_rank_00_model_states.pt"  # ZeRO 0-2: the full module state dict (and, at stage 0, the optimizer)
_DTYPES = {"float32", "bfloat16", "float16"}


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint ``path`` names: a checkpoint directory itself, or the newest one of a run / its checkpoints/."""
    if ckpt.is_complete(path):
        return path
    for root in (path, path / "checkpoints"):
        if (root / ckpt.LATEST).is_file() or any(root.glob("step_*")):
            return ckpt.latest(root)
    return None


def run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent  # RUN/checkpoints/step_N


def policy_weights_in_final(checkpoint: Path) -> Path | None:
    """``RUN/final`` when pruning left this checkpoint's policy weights only there."""
    pruned = ckpt.read_state(checkpoint).get("pruned") or {}
    if pruned.get("policy_weights") == ckpt.PRUNED_POLICY:
        final = run_dir_of(checkpoint) / "final"
        if not is_model_dir(final):
            raise ModelError(f"{checkpoint} keeps its weights in {final}, which is missing",
                             "the run's final/ directory was deleted; evaluate another checkpoint or snapshot")
        return final
    return None


def _config_source(checkpoint: Path) -> Path:
    """A directory with the model's config.json and tokenizer files."""
    saved = checkpoint / MODEL_CONFIG
    if is_model_dir(saved):
        return saved
    run = run_dir_of(checkpoint)
    sft = run / "sft" / "model"
    if is_model_dir(sft):
        return sft  # RL started from the SFT result: same architecture and tokenizer
    if not (run / "config.yaml").is_file():
        raise ModelError(f"{checkpoint} holds no model config and its run's config.yaml is missing",
                         "export checkpoints inside their run directory (RUN/checkpoints/step_N)")
    from toolrl.config.loader import load_config
    from toolrl.models import resolve_model_path

    return Path(resolve_model_path(load_config([run / "config.yaml"]).model))


def policy_state_dict(checkpoint: Path) -> dict[str, Any]:
    """The policy's weights in a checkpoint (all ZeRO stages), as a name -> tensor dict."""
    import torch

    ds_dir = checkpoint / POLICY
    tag_dir = ds_dir / TAG
    module_file = tag_dir / _MODULE_FILE
    if module_file.is_file():
        # Our own files: they hold non-tensor objects, so weights_only=False; mmap keeps the optimizer unread.
        state = torch.load(module_file, map_location="cpu", weights_only=False, mmap=True)
        module = state.get("module")
        if module:
            return dict(module)
    if any(tag_dir.glob("zero_pp_rank_*_model_states.pt")):  # ZeRO-3: weights live in the partitions
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=TAG))
    raise ModelError(f"no policy weights found in {checkpoint}",
                     f"expected {tag_dir}/{_MODULE_FILE} (ZeRO 0-2) or zero_pp_rank_* partition files (ZeRO-3)")


def export_checkpoint(checkpoint: Path, out: Path, dtype: str | None = None) -> Path:
    """Write ``checkpoint``'s policy as a Hugging Face model directory (config, tokenizer, safetensors) at ``out``,
    atomically. ``dtype`` (float32 / bfloat16 / float16) casts the weights; None keeps the checkpoint's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    checkpoint, out = Path(checkpoint), Path(out)
    if not ckpt.is_complete(checkpoint):
        raise ModelError(f"{checkpoint} is not a complete toolrl checkpoint",
                         "pass RUN/checkpoints/step_N (a directory with trainer_state.json and COMPLETE)")
    if dtype is not None and dtype not in _DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'", "use float32, bfloat16 or float16")
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    final = policy_weights_in_final(checkpoint)
    if final is not None and dtype is None:
        shutil.copytree(final, tmp)
    else:
        source = final or _config_source(checkpoint)
        state = (AutoModelForCausalLM.from_pretrained(str(final)).state_dict() if final is not None
                 else policy_state_dict(checkpoint))
        config = AutoConfig.from_pretrained(str(source))
        if dtype is not None:
            state = {k: v.to(getattr(torch, dtype)) for k, v in state.items()}
        with torch.device("meta"):  # no random init of weights that are replaced anyway
            model = AutoModelForCausalLM.from_config(config)
        result = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or result.unexpected_keys:
            raise ModelError(f"{checkpoint}'s weights do not fit the model config in {source}",
                             f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        model.tie_weights()
        model.config.dtype = next(iter(state.values())).dtype
        model.config.use_cache = True
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def _cache_key(checkpoint: Path) -> str:
    """Changes when the checkpoint is rewritten (a resumed run re-saves the same step)."""
    marker = checkpoint / ckpt.COMPLETE
    ident = f"{checkpoint.resolve()}:{marker.stat().st_mtime_ns}:{ckpt.read_state(checkpoint).get('pruned')}"
    return f"{checkpoint.name}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"


def model_dir_for(path: Path, cache: Path) -> Path | None:
    """A loadable model directory for a training run, its ``checkpoints/`` or one checkpoint; None if ``path`` is
    none of these. A run resolves to its ``final/`` model when it has one, else to its newest checkpoint."""
    path = Path(path)
    if not ckpt.is_complete(path) and is_model_dir(path / "final"):
        return path / "final"
    checkpoint = find_checkpoint(path)
    if checkpoint is None:
        return None
    final = policy_weights_in_final(checkpoint)
    if final is not None:
        return final
    from toolrl.models import file_lock

    target = cache / "exports" / _cache_key(checkpoint)
    with file_lock(target.parent / f".{target.name}.lock"):  # two evaluations of one checkpoint export it once
        if not is_model_dir(target):
            export_checkpoint(checkpoint, target)
    return target


__all__ = ["export_checkpoint", "model_dir_for", "policy_state_dict", "find_checkpoint", "MODEL_CONFIG"]
