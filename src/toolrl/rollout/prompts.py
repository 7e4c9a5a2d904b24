"""Prompt templates: ToRL's raw text for base models, the tokenizer's chat template for instruct models.

The instruction depends on the tool format and on whether code calls are allowed at all (C = 0 is text-only).
"""

from __future__ import annotations

from typing import Any

from toolrl.config.schema import RootConfig
from toolrl.errors import ConfigError
from toolrl.types import Problem

# ToRL's template, verbatim in structure: the instruction precedes the problem, then "Assistant:".
TORL_RAW = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "User: {instruction}\n{problem}\nAssistant:\n"
)

INSTRUCTIONS = {
    "torl": (
        "Please integrate natural language reasoning with programs to solve the problem above, "
        "and put your final answer within \\boxed{}."
    ),
    "retool": (
        "Solve the problem by reasoning step by step. You may write Python code between <code> and </code> tags "
        "as a ```python block; it is executed and its printed output is returned between <interpreter> and "
        "</interpreter> tags. Give the final answer as <answer>\\boxed{...}</answer>."
    ),
    "text": "Please reason step by step, and put your final answer within \\boxed{}.",
}

# Instruct models need to be told what the fenced block does; base models are steered by the raw template.
CHAT_INSTRUCTIONS = {
    "torl": (
        "Solve the problem. You can write Python code in a ```python code block; it is executed and its printed "
        "output is shown to you in an ```output block. Use print() to see results. "
        "Put your final answer within \\boxed{}."
    ),
    "retool": INSTRUCTIONS["retool"],
    "text": INSTRUCTIONS["text"],
}


def instruction_for(cfg: RootConfig, chat: bool) -> str:
    if cfg.prompt.system:
        return cfg.prompt.system
    key = "text" if cfg.tool.max_calls == 0 else cfg.tool.format
    return (CHAT_INSTRUCTIONS if chat else INSTRUCTIONS)[key]


def use_chat(cfg: RootConfig, tokenizer: Any) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if cfg.prompt.template == "chat":
        if not has_template:
            raise ConfigError(
                "prompt.template=chat but the tokenizer has no chat template",
                "use prompt.template=raw for base models",
            )
        return True
    if cfg.prompt.template == "raw":
        return False
    return has_template


def render_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> str:
    """The prompt text for one problem (special tokens included for chat templates)."""
    if use_chat(cfg, tokenizer):
        content = f"{problem.problem}\n\n{instruction_for(cfg, chat=True)}"
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return TORL_RAW.format(instruction=instruction_for(cfg, chat=False), problem=problem.problem)


def encode_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> tuple[str, list[int]]:
    """Prompt text and its token ids. Chat templates already contain their special tokens."""
    text = render_prompt(problem, cfg, tokenizer)
    ids = tokenizer(text, add_special_tokens=not use_chat(cfg, tokenizer))["input_ids"]
    return text, list(ids)
