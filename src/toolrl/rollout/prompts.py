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

# Small instruct models need to be shown what the fenced block does: a one-shot example (measured on SmolLM2-135M:
# without it the model writes comments instead of code, or copies a bare example expression).
CHAT_INSTRUCTIONS = {
    "torl": (
        "Answer the question using Python. Write one ```python code block that computes and prints the answer; "
        "it is run and its output appears in an ```output block. Then write the final answer within \\boxed{}.\n\n"
        "Example:\nQuestion: What is 25 * 31?\n```python\nprint(25 * 31)\n```\n```output\n775\n```\n"
        "The answer is \\boxed{775}."
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


def chat_messages(problem: Problem, cfg: RootConfig) -> list[dict[str, str]]:
    """The chat messages a chat prompt is built from: the data set's own prompt with ``prompt.template=dataset``
    (system message included), else one user turn holding the instruction and the problem."""
    own = problem.meta.get("prompt_messages")
    if cfg.prompt.template == "dataset" and own:
        return [dict(m) for m in own]
    content = f"{instruction_for(cfg, chat=True)}\n\nQuestion: {problem.problem}"
    return [{"role": "user", "content": content}]


def render_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> str:
    """The prompt text for one problem (special tokens included for chat templates)."""
    if cfg.prompt.template == "dataset" and problem.meta.get("prompt_messages") and not use_chat(cfg, tokenizer):
        raise ConfigError("prompt.template=dataset needs a tokenizer with a chat template",
                          "use prompt.template=raw for base models")
    if use_chat(cfg, tokenizer):
        return tokenizer.apply_chat_template(chat_messages(problem, cfg), tokenize=False, add_generation_prompt=True)
    return TORL_RAW.format(instruction=instruction_for(cfg, chat=False), problem=problem.problem)


def encode_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> tuple[str, list[int]]:
    """Prompt text and its token ids. Chat templates already contain their special tokens."""
    text = render_prompt(problem, cfg, tokenizer)
    ids = tokenizer(text, add_special_tokens=not use_chat(cfg, tokenizer))["input_ids"]
    return text, list(ids)
