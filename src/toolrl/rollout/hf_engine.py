"""Batched generation with a transformers model behind the Engine protocol.

A small sampling loop over the model's KV cache instead of ``model.generate``: it gives exact per-row stops (the
returned tokens end with the token that completed a stop string, never later), the logprob of every sampled token
under the sampling distribution, and no surprises from stop strings straddling the context boundary.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from toolrl.rollout.engine import BatchedSteps, EngineCaps, GenOutput, GenRequest, SamplingSpec


def sample_next(logits: torch.Tensor, spec: SamplingSpec, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row and return (tokens (B,), logprobs (B,)) under the distribution sampled from.

    logits: (B, V) float32.
    """
    if spec.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logits.argmax(dim=-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
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
    logp = torch.log_softmax(scores, dim=-1)
    tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class HFEngine:
    """Generates with an in-memory causal LM; share the trainer's module to avoid any weight copy."""

    name = "hf"
    caps = EngineCaps(shares_policy_weights=True, needs_weight_sync=False, returns_logprobs=True)

    def __init__(self, model: Any, tokenizer: Any, eos_token_ids: set[int], batch_size: int = 32) -> None:
        self._steps = BatchedSteps(self)
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids)
        self.last_stats: dict[str, float] = {}

    # The step protocol (static batches for now).
    @property
    def tokens_generated(self) -> int:
        return self._steps.tokens_generated

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        self._steps.submit(key, req, spec)

    def step(self) -> list[tuple[str, GenOutput]]:
        return self._steps.step()

    def abort(self, keys: Sequence[str]) -> None:
        self._steps.abort(keys)

    def has_unfinished(self) -> bool:
        return self._steps.has_unfinished()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        outputs: list[GenOutput | None] = [None] * len(requests)
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))
        generated = 0
        start = time.perf_counter()
        for lo in range(0, len(order), self.batch_size):
            chunk = order[lo : lo + self.batch_size]
            for i, out in zip(chunk, self._generate_batch([requests[i] for i in chunk], sampling)):
                outputs[i] = out
                generated += len(out.token_ids)
        self.last_stats = {"tokens": generated, "seconds": time.perf_counter() - start}
        return [o for o in outputs if o is not None]

    @torch.no_grad()
    def _generate_batch(self, reqs: list[GenRequest], spec: SamplingSpec) -> list[GenOutput]:
        was_training = self.model.training
        self.model.eval()
        try:
            return self._loop(reqs, spec)
        finally:
            self.model.train(was_training)

    def _loop(self, reqs: list[GenRequest], spec: SamplingSpec) -> list[GenOutput]:
        dev = self.device
        B = len(reqs)
        lens = [len(r.prompt_ids) for r in reqs]
        width = max(lens)
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, width), dtype=torch.long)
        for b, r in enumerate(reqs):  # left padding keeps every row's next token in the last column
            ids[b, width - lens[b] :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attn[b, width - lens[b] :] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        generator = None
        if spec.seed is not None and not spec.greedy:
            generator = torch.Generator(device=dev).manual_seed(spec.seed)

        max_new = max(r.max_new_tokens for r in reqs)
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        texts = [""] * B
        finish: list[str | None] = [None] * B
        stop_hit: list[str | None] = [None] * B
        max_stop = max((len(s) for r in reqs for s in r.stop), default=0)

        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        next_pos = pos[:, -1:] + 1
        for _ in range(max_new):
            tok, lp = sample_next(logits, spec, generator)
            tok_list = tok.tolist()
            lp_list = lp.tolist()
            for b in range(B):
                if finish[b] is not None:
                    continue
                t = tok_list[b]
                out_ids[b].append(t)
                out_lp[b].append(lp_list[b])
                if t in self.eos_token_ids:
                    finish[b] = "eos"
                    continue
                if reqs[b].stop:
                    texts[b] += self.tokenizer.decode([t], skip_special_tokens=False)
                    # Only the tail can newly contain a stop string: check a window, not the whole text.
                    window = texts[b][-(max_stop + 32) :]
                    for s in reqs[b].stop:
                        if s in window:
                            finish[b], stop_hit[b] = "stop", s
                            break
                    if finish[b] is not None:
                        continue
                if len(out_ids[b]) >= reqs[b].max_new_tokens:
                    finish[b] = "length"
            if all(f is not None for f in finish):
                break
            # Finished rows keep decoding a pad token (cheaper than reshaping the cache); their output is frozen.
            feed = torch.tensor(
                [[tok_list[b] if finish[b] is None else self.pad_id] for b in range(B)], dtype=torch.long, device=dev
            )
            attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=dev)], dim=-1)
            out = self.model(input_ids=feed, attention_mask=attn, position_ids=next_pos, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        return [
            GenOutput(token_ids=out_ids[b], finish=finish[b] or "length", stop_str=stop_hit[b], logprobs=out_lp[b])  # type: ignore[arg-type]
            for b in range(B)
        ]

    def close(self) -> None:
        self.model = None


def build_hf_engine(cfg: Any, model: Any = None, tokenizer: Any = None) -> HFEngine:
    """Load ``cfg.model`` (or use the given in-memory module) for batched generation."""
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
    return HFEngine(model, tokenizer, eos_token_ids(tokenizer, model), batch_size=cfg.rollout.batch_size)
