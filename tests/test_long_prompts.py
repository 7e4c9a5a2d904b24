"""Long prompts: training drops them when its data loads, evaluation checks them against the model's context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from toolrl.config import load_config
from toolrl.errors import DataError
from toolrl.eval.evaluator import check_prompts_fit, model_context
from toolrl.rollout.prompts import encode_prompt, prompt_lengths
from toolrl.train.data import drop_long_prompts
from toolrl.types import Problem

PROBLEMS = [Problem("short", "What is 2+2?", "4"), Problem("long", "Compute the sum. " * 120, "0"),
            Problem("mid", "Find x if 3x = 12 and explain each step carefully.", "4")]


@pytest.mark.parametrize("overrides", [[], ["prompt.template=raw"], ["tool.format=retool", "prompt.file=retool"]])
def test_prompt_lengths_are_exactly_what_rollouts_encode(tokenizer, overrides: list[str]) -> None:
    cfg = load_config(None, overrides)
    assert prompt_lengths(PROBLEMS, cfg, tokenizer) == [len(encode_prompt(p, cfg, tokenizer)[1]) for p in PROBLEMS]


def test_training_drops_long_prompts_and_fails_only_when_nothing_is_left(tokenizer) -> None:
    cfg = load_config(None, [])
    lengths = prompt_lengths(PROBLEMS, cfg, tokenizer)
    kept, dropped = drop_long_prompts(PROBLEMS, lengths, max(lengths) - 1)
    assert [p.id for p in kept] == ["short", "mid"] and dropped == 1
    with pytest.raises(DataError) as e:
        drop_long_prompts(PROBLEMS, lengths, min(lengths) - 1)
    assert "rollout.max_prompt_tokens" in e.value.message and str(min(lengths)) in (e.value.hint or "")


@dataclass
class ContextEngine:
    """Only what the budget check reads: a tokenizer and a context length (like vLLM's max_model_len)."""

    tokenizer: Any
    max_model_len: int
    eos_token_ids: set[int] = field(default_factory=set)


def test_evaluation_budget_follows_the_model_context_not_the_training_filter(tokenizer) -> None:
    cfg = load_config(None, ["rollout.max_prompt_tokens=16", "rollout.max_new_tokens=100"])
    longest = max(prompt_lengths(PROBLEMS, cfg, tokenizer))
    # rollout.max_prompt_tokens=16 would drop every problem from training; evaluation keeps them all
    assert check_prompts_fit(PROBLEMS, cfg, ContextEngine(tokenizer, longest + 100)) == longest
    with pytest.raises(DataError) as e:  # one token short: the long problem cannot fit the model at all
        check_prompts_fit(PROBLEMS, cfg, ContextEngine(tokenizer, longest + 99))
    assert "'long'" in e.value.message and "context" in e.value.message and "max_new_tokens" in (e.value.hint or "")


def test_model_context_takes_the_smallest_known_limit(tokenizer) -> None:
    class Config:
        max_position_embeddings = 2048

    class Model:
        config = Config()

    @dataclass
    class HFLike:
        tokenizer: Any
        model: Any = field(default_factory=Model)

    assert model_context(HFLike(tokenizer)) == min(2048, tokenizer.model_max_length)
    assert model_context(ContextEngine(tokenizer, 512)) == 512
