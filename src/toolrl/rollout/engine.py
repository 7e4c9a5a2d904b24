"""The generation-engine contract: token ids in, token ids out. Engines know nothing about tools, prompts or sandboxes.

One scheduler (``toolrl.rollout.run_rollouts``) drives every engine through a small request-level protocol:

- ``submit(key, request, sampling)`` queues one request under a key unique among live requests;
- ``step()`` does a bounded amount of work (one decode iteration, a chunk of tokens, or one HTTP poll) and returns
  the requests that finished in it as ``(key, GenOutput)`` pairs;
- ``abort(keys)`` drops live requests (their outputs never come back);
- ``has_unfinished()`` says whether any submitted request has not come back yet;
- ``tokens_generated`` counts every token decoded so far, finished or not: the scheduler turns its increments into
  progress events (an engine that only learns counts when a request completes adds them then);
- ``caps`` declares what the trainer may rely on (instead of branching on engine names), ``name`` is for headers.

An engine that can only generate whole batches (``BatchEngine.generate``) fits through ``BatchedSteps``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

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
    request_id: str = ""  # stable per trajectory; engines use it for per-request seeds / prefix caching


@dataclass
class GenOutput:
    token_ids: list[int]  # new tokens only; ends with the token that completed a stop string, or with EOS
    finish: EngineFinish
    stop_str: str | None = None  # which stop string ended it (finish == "stop")
    logprobs: list[float] | None = None  # (len(token_ids),) logprob of each sampled token, when available
    # Set when the engine itself failed (e.g. its rollout server died): the trajectory becomes an infrastructure
    # failure, dropped from training and never blamed on the model.
    error: str | None = None


@dataclass(frozen=True)
class EngineCaps:
    """What an engine guarantees; the trainer and the CLI decide on these, never on engine names."""

    # Generates with the trainer's live in-memory module: updates are visible at once, nothing to sync.
    shares_policy_weights: bool = False
    # Holds its own copy of the weights: the trainer must call ``sync_weights(module)`` after every update.
    needs_weight_sync: bool = False
    # GenOutput.logprobs is filled (sampled-token logprobs under the sampling distribution).
    returns_logprobs: bool = True


@runtime_checkable
class Engine(Protocol):
    """The step protocol every engine implements (see the module docstring)."""

    name: str
    caps: EngineCaps
    tokenizer: Any
    eos_token_ids: set[int]
    tokens_generated: int

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None: ...

    def step(self) -> list[tuple[str, GenOutput]]: ...

    def abort(self, keys: Sequence[str]) -> None: ...

    def has_unfinished(self) -> bool: ...

    def close(self) -> None: ...


class WeightSyncing(Protocol):
    """Engines with ``caps.needs_weight_sync`` also have this: push a module's (or a saved directory's) weights.

    Returns a dict that may hold the post-sync check's ``mean``/``max`` |logprob difference|."""

    def sync_weights(self, source: Any) -> dict[str, Any]: ...


class BatchEngine(Protocol):
    """A generator of whole batches: ``generate`` returns one GenOutput per request, in order."""

    tokenizer: Any
    eos_token_ids: set[int]

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]: ...


class BatchedSteps:
    """The step protocol over a batch generator: each ``step`` generates everything queued, to the end.

    Every request of a step waits for the longest one (the classic batched loop); use it for engines that cannot
    join and leave a running batch.
    """

    def __init__(self, inner: BatchEngine, name: str | None = None, caps: EngineCaps | None = None) -> None:
        self.inner = inner
        self.name = name or getattr(inner, "name", type(inner).__name__)
        self.caps = caps or getattr(inner, "caps", EngineCaps())
        self.tokenizer = inner.tokenizer
        self.eos_token_ids = inner.eos_token_ids
        self.tokens_generated = 0
        self._queue: list[tuple[str, GenRequest, SamplingSpec]] = []

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        self._queue.append((key, req, spec))

    def step(self) -> list[tuple[str, GenOutput]]:
        queue, self._queue = self._queue, []
        done: list[tuple[str, GenOutput]] = []
        by_spec: dict[int, list[tuple[str, GenRequest, SamplingSpec]]] = {}
        for item in queue:  # one generate call per sampling spec (the scheduler uses one spec per run)
            by_spec.setdefault(id(item[2]), []).append(item)
        for items in by_spec.values():
            outs = self.inner.generate([r for _, r, _ in items], items[0][2])
            for (key, _, _), out in zip(items, outs):
                self.tokens_generated += len(out.token_ids)
                done.append((key, out))
        return done

    def abort(self, keys: Sequence[str]) -> None:
        drop = set(keys)
        self._queue = [q for q in self._queue if q[0] not in drop]

    def has_unfinished(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def request_seed(seed: int | None, request_id: str, prompt_len: int) -> int | None:
    """A per-request seed: reproducible, independent of the batch, yet different for the n samples of one prompt
    (distinct request ids) and for each turn of a trajectory (its context grows).

    >>> request_seed(None, "p#0", 10) is None
    True
    >>> request_seed(0, "p#0", 10) == request_seed(0, "p#0", 10) != request_seed(0, "p#1", 10)
    True
    """
    if seed is None:
        return None
    return zlib.crc32(f"{seed}:{request_id}:{prompt_len}".encode()) & 0x7FFFFFFF


def generate(engine: Engine, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
    """One-shot generation through the step protocol: one GenOutput per request, in order."""
    keys = [f"gen{i}" for i in range(len(requests))]
    for k, r in zip(keys, requests):
        # An empty request id would give every request the same per-request seed: use the position instead.
        engine.submit(k, r if r.request_id else GenRequest(r.prompt_ids, r.max_new_tokens, list(r.stop), k), sampling)
    results: dict[str, GenOutput] = {}
    while len(results) < len(keys):
        for k, out in engine.step():
            results[k] = out
        if len(results) < len(keys) and not engine.has_unfinished():
            missing = [k for k in keys if k not in results]
            raise RuntimeError(f"engine {engine.name} dropped requests {missing[:3]}")
    return [results[k] for k in keys]
