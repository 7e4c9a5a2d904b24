"""Model shapes for memory planning: read from a local config.json, or a built-in table for the shipped recipes.

Only what the arithmetic needs (layers, hidden, heads, KV heads, head size, MLP width, vocabulary, tied embeddings,
biases). The table's values are the models' published config.json files; the hub is not consulted, so a plan can be
made on a machine that cannot download the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolrl.errors import ModelError


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False
    head_dim: int = 0  # 0 = hidden / heads
    source: str = ""  # where these numbers came from

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_size

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_size

    @property
    def layer_params(self) -> int:
        """One decoder layer: attention (q, k, v, o), gated MLP (gate, up, down), two RMSNorms."""
        h = self.hidden
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        return attn + 3 * h * self.intermediate + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def total_params(self) -> int:
        """Unique parameters (a tied LM head counts once, as DeepSpeed's estimators count them)."""
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.embedding_params + head + self.layers * self.layer_params + self.hidden

    @property
    def largest_layer_params(self) -> int:
        """The largest single module's own parameters (DeepSpeed's ZeRO-3 'largest layer'): the embedding here."""
        return max(self.embedding_params, self.hidden * self.intermediate)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V of every layer for one token, the whole model (divide by TP for one GPU's share)."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


_HUB = "built-in table (the model's published config.json)"

# Keyed by hub id, lower case.
KNOWN: dict[str, ModelShape] = {
    s.name.lower(): s
    for s in (
        ModelShape("Qwen/Qwen2.5-Math-1.5B", layers=28, hidden=1536, heads=12, kv_heads=2, intermediate=8960,
                   vocab=151936, tied_embeddings=True, qkv_bias=True, source=_HUB),
        ModelShape("Qwen/Qwen2.5-Math-7B", layers=28, hidden=3584, heads=28, kv_heads=4, intermediate=18944,
                   vocab=152064, tied_embeddings=False, qkv_bias=True, source=_HUB),
        ModelShape("Qwen/Qwen2.5-32B-Instruct", layers=64, hidden=5120, heads=40, kv_heads=8, intermediate=27648,
                   vocab=152064, tied_embeddings=False, qkv_bias=True, source=_HUB),
        ModelShape("HuggingFaceTB/SmolLM2-135M-Instruct", layers=30, hidden=576, heads=9, kv_heads=3,
                   intermediate=1536, vocab=49152, tied_embeddings=True, source=_HUB),
    )
}
EMBEDDED_ALIASES = ("", "embedded", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct")


def shape_from_config(config: dict, name: str, source: str) -> ModelShape:
    """A ModelShape from a Hugging Face config.json dict (Llama / Qwen2 / Mistral-style keys)."""
    try:
        heads = int(config["num_attention_heads"])
        return ModelShape(
            name=name,
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            head_dim=int(config.get("head_dim") or 0),
            source=source,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{source} lacks a decoder-only model's shape ({e})",
                         "toolrl plan understands Llama/Qwen2-style config.json files") from None


def model_shape(path: str | None) -> ModelShape:
    """The shape of ``model.path``: a local directory's config.json first, then the built-in table."""
    key = (path or "").strip()
    local = Path(key).expanduser() if key else None
    if local is not None and (local / "config.json").is_file():
        cfg_file = local / "config.json"
        return shape_from_config(json.loads(cfg_file.read_text()), key, f"{cfg_file}")
    low = key.lower()
    if low in EMBEDDED_ALIASES:
        low = "huggingfacetb/smollm2-135m-instruct"
    if low in KNOWN:
        return KNOWN[low]
    known = ", ".join(s.name for s in KNOWN.values())
    raise ModelError(f"no shape known for model '{key}' (not a local directory with config.json)",
                     f"point model.path at a local copy of the model, or use one of: {known}")


__all__ = ["KNOWN", "ModelShape", "model_shape", "shape_from_config"]
