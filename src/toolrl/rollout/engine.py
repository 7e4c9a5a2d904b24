"""The generation-engine contract: token ids in, token ids out. Engines know nothing about tools or prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

EngineFinish = Literal["stop", "eos", "length"]


@dataclass
class SamplingSpec:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class GenRequest:
    prompt_ids: list[int]  # the full context so far: prompt + response tokens (model and observation)
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)  # generation ends right after any of these strings
    request_id: str = ""  # stable per trajectory; engines may use it for seeding / prefix caching


@dataclass
class GenOutput:
    token_ids: list[int]  # new tokens only; ends with the token that completed a stop string, or with EOS
    finish: EngineFinish
    stop_str: str | None = None  # which stop string ended it (finish == "stop")
    logprobs: list[float] | None = None  # (len(token_ids),) logprob of each sampled token, when available
    # Set when the engine itself failed (e.g. its rollout server died): the trajectory becomes an infrastructure
    # failure, dropped from training and never blamed on the model.
    error: str | None = None


@runtime_checkable
class Engine(Protocol):
    """A batched generator. ``generate`` returns one GenOutput per request, in order."""

    tokenizer: Any
    eos_token_ids: set[int]

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]: ...

    def close(self) -> None: ...
