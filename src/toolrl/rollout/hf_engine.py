"""Generation with an in-memory transformers model behind the step protocol, with continuous batching.

A small sampling loop over the model's KV cache instead of ``model.generate``: it gives exact per-row stops (the
returned tokens end with the token that completed a stop string, never later), the logprob of every sampled token
under the sampling distribution, and a seed per request, so a row's tokens do not depend on its batch.

Two modes (``rollout.hf_mode``):
- ``continuous`` (default): one decode iteration per ``step()``. Every ``admit_every`` steps (or at once when the
  batch is empty) finished rows leave the batch and waiting requests join: they are prefilled on their own, then
  their KV cache is left-padded to the running batch's width and concatenated (padding is masked, so a row's
  tokens do not change). No row waits for the batch's longest one.
- ``static``: every ``step()`` generates everything queued to the end, each batch waiting for its longest row (the
  older loop, kept for comparison in benchmarks/rollout_bench.py).

transformers' own continuous batching (``generate_batch`` / ``ContinuousBatchingManager``, 5.x) was not used: it
has one seed per manager, no stop strings, runs its own thread and swaps the model's attention implementation, which
the trainer shares.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from toolrl.errors import ToolrlError
from toolrl.rollout.engine import BatchedSteps, EngineCaps, GenOutput, GenRequest, SamplingSpec, generate, request_seed


def processed_logprobs(logits: torch.Tensor, spec: SamplingSpec) -> torch.Tensor:
    """Log-probabilities of the distribution sampled from (temperature, top-k, top-p applied): (B, V) -> (B, V)."""
    if spec.greedy:
        return torch.log_softmax(logits, dim=-1)
    scores = logits / spec.temperature
    if spec.top_k and spec.top_k > 0:
        kth = torch.topk(scores, min(spec.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if spec.top_p < 1.0:
        sorted_scores, idx = torch.sort(scores, descending=True, dim=-1)
        cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_scores, dim=-1) > spec.top_p  # keep the token that crosses top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, idx, sorted_scores)
    return torch.log_softmax(scores, dim=-1)


def sample_next(logits: torch.Tensor, spec: SamplingSpec, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row and return (tokens (B,), logprobs (B,)) under the distribution sampled from.

    logits: (B, V) float32.
    """
    logp = processed_logprobs(logits, spec)
    if spec.greedy:
        tok = logits.argmax(dim=-1)
    else:
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


@dataclass
class _Row:
    """One request's output so far, and the stop rules that end it."""

    key: str
    req: GenRequest
    spec: SamplingSpec
    generator: torch.Generator | None = None
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    stop_str: str | None = None

    def accept(self, token: int, logprob: float, tokenizer: Any, eos: set[int]) -> bool:
        """Append one sampled token; True when the request is finished."""
        self.ids.append(token)
        self.logprobs.append(logprob)
        if token in eos:
            self.finish = "eos"
        elif self.req.stop:
            self.text += tokenizer.decode([token], skip_special_tokens=False)
            # Only the tail can newly contain a stop string: check a window, not the whole text.
            window = self.text[-(max(len(s) for s in self.req.stop) + 32):]
            self.stop_str = next((s for s in self.req.stop if s in window), None)
            if self.stop_str is not None:
                self.finish = "stop"
        if self.finish is None and len(self.ids) >= self.req.max_new_tokens:
            self.finish = "length"
        return self.finish is not None

    def output(self) -> GenOutput:
        return GenOutput(token_ids=self.ids, finish=self.finish or "length", stop_str=self.stop_str,  # type: ignore[arg-type]
                         logprobs=self.logprobs)


def _left_padded(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (B, max len): left padding keeps every row's next token in the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attn[b, width - len(p):] = 1
    return ids.to(device), attn.to(device)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero-pad ``t`` on the left of ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [missing, 0]
    return F.pad(t, pad)


class HFEngine:
    """Generates with an in-memory causal LM; share the trainer's module to avoid any weight copy."""

    name = "hf"
    caps = EngineCaps(shares_policy_weights=True, needs_weight_sync=False, returns_logprobs=True)

    def __init__(self, model: Any, tokenizer: Any, eos_token_ids: set[int], batch_size: int = 32,
                 mode: str = "continuous", admit_every: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.batch_size = max(1, batch_size)
        self.mode = mode if mode == "static" or _plain_kv_cache(model) else "static"
        self.admit_every = max(1, admit_every)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids)
        self.last_stats: dict[str, float] = {}
        self._static = BatchedSteps(_StaticBatches(self))
        # continuous state: waiting rows; the running batch (cache order) with its KV cache, mask, positions, logits
        self._cont_tokens = 0
        self._waiting: deque[_Row] = deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._attn: torch.Tensor | None = None  # (B, W) 1 = a real token in the cache
        self._pos: torch.Tensor | None = None  # (B, 1) position of each row's next token
        self._logits: torch.Tensor | None = None  # (B, V) next-token logits
        self._since_admit = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------ step protocol
    @property
    def tokens_generated(self) -> int:
        return self._static.tokens_generated + self._cont_tokens

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        if self.mode == "static":
            self._static.submit(key, req, spec)
            return
        gen = None
        seed = request_seed(spec.seed, req.request_id or key, len(req.prompt_ids))
        if seed is not None and not spec.greedy:
            gen = torch.Generator(device=self.device).manual_seed(seed)
        self._waiting.append(_Row(key, req, spec, gen))

    def step(self) -> list[tuple[str, GenOutput]]:
        if self.mode == "static":
            return self._static.step()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self._step()
        finally:
            self.model.train(was_training)

    def abort(self, keys: Sequence[str]) -> None:
        self._static.abort(keys)
        drop = set(keys)
        self._waiting = deque(r for r in self._waiting if r.key not in drop)
        for r in self._rows:
            if r.key in drop and r.finish is None:
                r.finish = "length"  # leaves at the next compaction; never reported
                r.key = ""

    def has_unfinished(self) -> bool:
        return self._static.has_unfinished() or bool(self._waiting) or any(r.finish is None for r in self._rows)

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        """One-shot generation (tests, probes); rollouts go through ``toolrl.rollout.run_rollouts``."""
        start, before = time.perf_counter(), self.tokens_generated
        outs = generate(self, requests, sampling)
        self.last_stats = {"tokens": float(self.tokens_generated - before), "seconds": time.perf_counter() - start}
        return outs

    def close(self) -> None:
        self._cache = self._attn = self._pos = self._logits = None
        self._rows, self._waiting = [], deque()
        self.model = None

    # ------------------------------------------------------------------------------- continuous batching
    def _step(self) -> list[tuple[str, GenOutput]]:
        alive = [r for r in self._rows if r.finish is None]
        dead = len(alive) < len(self._rows)
        if (self._waiting or dead) and (not alive or self._since_admit >= self.admit_every):
            self._rebatch()
        if not self._rows:
            return []
        self._since_admit += 1
        done: list[tuple[str, GenOutput]] = []
        feed = [self.pad_id] * len(self._rows)  # finished rows decode a pad until they leave; their output is frozen
        for spec_rows in _by_spec(self._rows):
            idx = [b for b, r in spec_rows if r.finish is None]
            if not idx:
                continue
            spec = spec_rows[0][1].spec
            logp = processed_logprobs(self._logits[idx], spec)  # type: ignore[index]
            for j, b in enumerate(idx):
                r = self._rows[b]
                if spec.greedy:
                    tok = int(self._logits[b].argmax())  # type: ignore[index]
                else:
                    tok = int(torch.multinomial(logp[j].exp(), 1, generator=r.generator))
                self._cont_tokens += 1
                if r.accept(tok, float(logp[j, tok]), self.tokenizer, self.eos_token_ids):
                    if r.key:
                        done.append((r.key, r.output()))
                else:
                    feed[b] = tok
        if all(r.finish is not None for r in self._rows):
            self._rows, self._cache = [], None  # the next step starts a fresh batch
            return done
        dev = self.device
        self._attn = torch.cat([self._attn, torch.ones((len(self._rows), 1), dtype=torch.long, device=dev)], dim=-1)
        out = self.model(input_ids=torch.tensor(feed, device=dev)[:, None], attention_mask=self._attn,
                         position_ids=self._pos, past_key_values=self._cache, use_cache=True)
        self._cache, self._logits = out.past_key_values, out.logits[:, -1, :].float()
        self._pos = self._pos + 1  # type: ignore[operator]
        return done

    def _rebatch(self) -> None:
        """Finished rows leave; waiting requests are prefilled and join (up to ``batch_size`` rows)."""
        keep = [b for b, r in enumerate(self._rows) if r.finish is None]
        if len(keep) < len(self._rows):
            self._select(keep)
        room = self.batch_size - len(self._rows)
        joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if joining:
            self._join(joining)
        self._since_admit = 0

    def _select(self, keep: list[int]) -> None:
        self._rows = [self._rows[b] for b in keep]
        if not keep:
            self._cache = self._attn = self._pos = self._logits = None
            return
        idx = torch.tensor(keep, device=self.device)
        attn = self._attn.index_select(0, idx)  # type: ignore[union-attr]
        first = int((attn.sum(0) > 0).nonzero()[0])  # columns that are padding in every remaining row go
        self._attn = attn[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, first:]
            layer.values = layer.values.index_select(0, idx)[:, :, first:]
        self._pos = self._pos.index_select(0, idx)  # type: ignore[union-attr]
        self._logits = self._logits.index_select(0, idx)  # type: ignore[union-attr]

    def _join(self, rows: list[_Row]) -> None:
        ids, attn = _left_padded([r.req.prompt_ids for r in rows], self.pad_id, self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self._forward_last(ids, attn, pos)
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        _check_plain(cache)
        next_pos = pos[:, -1:] + 1
        if self._cache is None:
            self._cache, self._attn, self._pos, self._logits = cache, attn, next_pos, logits
        else:  # left-pad both to one width, then stack the new rows under the running ones
            width = max(self._attn.shape[1], attn.shape[1])  # type: ignore[union-attr]
            self._attn = torch.cat([_pad_left(self._attn, width, 1), _pad_left(attn, width, 1)], dim=0)  # type: ignore[arg-type]
            for old, new in zip(self._cache.layers, cache.layers):
                old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)], dim=0)
                old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)], dim=0)
            self._pos = torch.cat([self._pos, next_pos], dim=0)  # type: ignore[list-item]
            self._logits = torch.cat([self._logits, logits], dim=0)  # type: ignore[list-item]
        self._rows.extend(rows)

    def _forward_last(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> Any:
        """A prefill forward that keeps only the last position's logits where the model allows it (a full (B, L, V)
        logits tensor of a long prompt costs gigabytes)."""
        try:
            return self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        except TypeError:
            return self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)


class _StaticBatches:
    """The batch generator behind ``hf_mode=static``: each batch runs until its longest row is done."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.eos_token_ids = engine.eos_token_ids

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        outputs: list[GenOutput | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))  # less padding per batch
        model = self.engine.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for lo in range(0, len(order), self.engine.batch_size):
                    chunk = order[lo: lo + self.engine.batch_size]
                    for i, out in zip(chunk, self._batch([requests[i] for i in chunk], sampling)):
                        outputs[i] = out
        finally:
            model.train(was_training)
        return [o for o in outputs if o is not None]

    def _batch(self, reqs: list[GenRequest], spec: SamplingSpec) -> list[GenOutput]:
        eng = self.engine
        dev = eng.device
        ids, attn = _left_padded([r.prompt_ids for r in reqs], eng.pad_id, dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        generator = None
        if spec.seed is not None and not spec.greedy:
            generator = torch.Generator(device=dev).manual_seed(spec.seed)
        rows = [_Row(str(b), r, spec) for b, r in enumerate(reqs)]
        out = eng._forward_last(ids, attn, pos)
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        next_pos = pos[:, -1:] + 1
        for _ in range(max(r.max_new_tokens for r in reqs)):
            tok, lp = sample_next(logits, spec, generator)
            toks, lps = tok.tolist(), lp.tolist()
            for b, r in enumerate(rows):
                if r.finish is None:
                    r.accept(toks[b], lps[b], eng.tokenizer, eng.eos_token_ids)
            if all(r.finish is not None for r in rows):
                break
            # Finished rows keep decoding a pad token (cheaper than reshaping the cache); their output is frozen.
            feed = torch.tensor([[toks[b] if r.finish is None else eng.pad_id] for b, r in enumerate(rows)], device=dev)
            attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=dev)], dim=-1)
            out = eng.model(input_ids=feed, attention_mask=attn, position_ids=next_pos, past_key_values=cache,
                            use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        return [r.output() for r in rows]


def _by_spec(rows: list[_Row]) -> list[list[tuple[int, _Row]]]:
    """Batch positions grouped by sampling spec (the scheduler uses one per run: usually a single group)."""
    groups: dict[int, list[tuple[int, _Row]]] = {}
    for b, r in enumerate(rows):
        groups.setdefault(id(r.spec), []).append((b, r))
    return list(groups.values())


def _plain_kv_cache(model: Any) -> bool:
    """Continuous batching edits the KV cache of full-attention layers; sliding-window or hybrid models stay static."""
    config = getattr(model, "config", None)
    types = getattr(config, "layer_types", None)
    if types and any(t != "full_attention" for t in types):
        return False
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def _check_plain(cache: Any) -> None:
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer) is not DynamicLayer for layer in layers):
        raise ToolrlError("this model's KV cache cannot be joined across requests (continuous batching)",
                          "set rollout.hf_mode=static")


def build_hf_engine(cfg: Any, model: Any = None, tokenizer: Any = None) -> HFEngine:
    """Load ``cfg.model`` (or use the given in-memory module) for generation."""
    from toolrl.models import (
        eos_token_ids,
        load_model,
        load_tokenizer,
        resolve_device,
        resolve_dtype,
        resolve_model_path,
    )

    if model is None or tokenizer is None:
        path = resolve_model_path(cfg.model)
        if tokenizer is None:
            tokenizer = load_tokenizer(path, cfg.model.trust_remote_code)
        if model is None:
            device = resolve_device(cfg.run.device)
            model = load_model(path, resolve_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code)
    return HFEngine(model, tokenizer, eos_token_ids(tokenizer, model), batch_size=cfg.rollout.batch_size,
                    mode=cfg.rollout.hf_mode, admit_every=cfg.rollout.hf_admit_every)
