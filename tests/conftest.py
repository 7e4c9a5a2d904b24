"""Shared fixtures: the embedded tokenizer, a tiny random Llama built from it, and a thread-safe test sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real embedded SmolLM2-135M-Instruct, converted once and cached (~30 s the first time)."""
    from toolrl.models import embedded_model_dir as _embedded

    return _embedded(show_progress=False)


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir: Path):
    from toolrl.models import load_tokenizer

    return load_tokenizer(str(embedded_model_dir))


def build_tiny_model_dir(target: Path, tokenizer_dir: Path, seed: int = 0, **shape: object) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64 unless ``shape`` overrides LlamaConfig fields) with the
    embedded model's tokenizer, saved as an HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    fields: dict[str, object] = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    fields.update(shape)
    model = LlamaForCausalLM(LlamaConfig(**fields))
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    """A tiny random Llama sharing the embedded tokenizer: fast enough for training and engine tests."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), embedded_model_dir)


@pytest.fixture()
def data_dir() -> Path:
    """The benchmark data directory (CI sets TOOLRL_DATA_DIR=../shared/data)."""
    value = os.environ.get("TOOLRL_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("TOOLRL_DATA_DIR is not set to the benchmark data directory")
    return Path(value)
