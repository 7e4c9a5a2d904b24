"""Cold-start SFT: next-token loss on model-written tokens only (prompts and interpreter output are masked)."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Sequence

import torch

from toolrl.algos import aggregate
from toolrl.train.batch import chunks, loss_units, pack_examples
from toolrl.train.forward import response_logprobs
from toolrl.train.sft_data import Example


def sft_loss(model: Any, batch: Any) -> tuple[torch.Tensor, float]:
    """Token-mean negative log-likelihood over the mask; returns (loss, number of trained tokens)."""
    logprobs, _ = response_logprobs(model, batch)
    return aggregate(-logprobs, batch.mask, "token_mean"), float(batch.mask.sum().item())


def run_sft(
    engine: Any,
    examples: Sequence[Example],
    *,
    pad_id: int,
    epochs: int,
    batch_size: int,
    micro_batch_size: int,
    seed: int = 0,
    reduce: Callable[[list[float], str], list[float]] = lambda v, op: v,
    world_size: int = 1,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``engine`` (a DeepSpeed engine) on ``examples``; every rank passes its own shard. One record per
    optimizer step: ``sft/loss``, ``sft/tokens``, ``grad_norm``, ``lr``, ``time/step_s``."""
    from toolrl.train.update import _grad_norm, _lr, boundary_grad_norm, split_even

    history: list[dict[str, float]] = []
    order = list(range(len(examples)))
    local_batch = max(1, batch_size // max(1, world_size))
    step = 0
    for epoch in range(epochs):
        random.Random(f"toolrl-sft/{seed}/{epoch}").shuffle(order)
        n_batches = int(reduce([float(-(-len(order) // local_batch))], "max")[0])
        for rows in split_even(len(order), n_batches):
            t0 = time.perf_counter()
            picked = [examples[order[i]] for i in rows] or [examples[order[0]]]
            batch = pack_examples(picked, pad_id).to(engine.device)
            if not rows:
                batch.mask = torch.zeros_like(batch.mask)
            units = reduce([loss_units(batch.mask, "token_mean")], "sum")[0] / world_size
            micro = chunks(batch.size, micro_batch_size)
            n_micro = int(reduce([float(len(micro))], "max")[0])
            total, tokens = 0.0, 0.0
            pre_norm: float | None = None
            for i in range(n_micro):
                part = batch.select(micro[i] if i < len(micro) else [0])
                if i >= len(micro):
                    part.mask = torch.zeros_like(part.mask)
                engine.set_gradient_accumulation_boundary(i == n_micro - 1)
                loss, ntok = sft_loss(engine, part)
                weight = ntok / max(units, 1e-8)
                engine.backward(loss * weight, scale_wrt_gas=False)
                if i == n_micro - 1:
                    pre_norm = boundary_grad_norm(engine)
                engine.step()
                total += float(loss.item()) * ntok
                tokens += ntok
            step += 1
            record = {"sft/loss": total / max(tokens, 1.0), "sft/tokens": tokens, "lr": _lr(engine),
                      "time/step_s": time.perf_counter() - t0}
            gn = _grad_norm(engine)
            gn = gn if gn is not None else pre_norm
            if gn is not None:
                record["grad_norm"] = gn
            history.append(record)
            if on_step is not None:
                on_step(step, record)
    return history
