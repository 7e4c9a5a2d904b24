"""rollout.vllm.dtype: the precision a vLLM sampler runs in, and what `toolrl serve` starts servers with."""

from __future__ import annotations

import pytest
import torch

from toolrl.cli.serve_cmd import server_command
from toolrl.config.loader import load_config
from toolrl.errors import ConfigError
from toolrl.models import sampler_dtype


def test_auto_follows_the_model_and_an_explicit_value_overrides_it():
    assert sampler_dtype(load_config(None, []), "cpu") == torch.float32  # model.dtype auto -> float32 on CPU
    assert sampler_dtype(load_config(None, ["model.dtype=float16"]), "cpu") == torch.float16
    assert sampler_dtype(load_config(None, ["rollout.vllm.dtype=bfloat16"]), "cpu") == torch.bfloat16
    assert sampler_dtype(load_config(None, ["rollout.vllm.dtype=auto"]), "cuda") == torch.bfloat16


def test_serve_starts_servers_in_the_sampler_dtype():
    cmd, _ = server_command(load_config(None, ["rollout.vllm.dtype=bfloat16"]), "127.0.0.1", 8000, "/m", gpu=False)
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"


def test_an_unknown_dtype_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="bfloat16"):
        load_config(None, ["rollout.vllm.dtype=bf16"])
