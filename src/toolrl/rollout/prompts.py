"""Prompt templates: ToRL's raw text for base models, the tokenizer's chat template for instruct models.

The instruction depends on the tool format and on ``prompt.instruction`` (auto: C = 0 is text-only). A template
file (``prompt.file``, e.g. ReTool's Fig. 7 template in ``toolrl/prompts/retool.txt``) replaces the instruction and
is the whole user message, with ``{question}`` where the problem goes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

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


_SHIPPED_TEMPLATES = Path(__file__).resolve().parents[1] / "prompts"  # sources: toolrl/prompts/SOURCES.md
QUESTION_SLOT = "{question}"


@lru_cache(maxsize=8)
def load_template_file(name_or_path: str) -> str:
    """A shipped template by name (``retool``) or a text file; it must contain ``{question}`` once or more."""
    shipped = _SHIPPED_TEMPLATES / f"{name_or_path}.txt"
    path = shipped if shipped.is_file() else Path(name_or_path).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in _SHIPPED_TEMPLATES.glob("*.txt")))
        raise ConfigError(f"prompt.file '{name_or_path}' is neither a shipped template nor a file",
                          f"use one of: {names}, or a path to a text file with {QUESTION_SLOT} in it")
    text = path.read_text(encoding="utf-8").removesuffix("\n")
    if QUESTION_SLOT not in text:
        raise ConfigError(f"prompt template {path} has no {QUESTION_SLOT} slot", f"write {QUESTION_SLOT} where the problem goes")
    return text


def instruction_for(cfg: RootConfig, chat: bool) -> str:
    if cfg.prompt.system:
        return cfg.prompt.system
    mode = cfg.prompt.instruction
    if mode == "auto":
        mode = "text" if cfg.tool.max_calls == 0 else "tool"
    key = "text" if mode == "text" else cfg.tool.format
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
    if cfg.prompt.file:
        return [{"role": "user", "content": template_prompt(problem, cfg)}]
    content = f"{instruction_for(cfg, chat=True)}\n\nQuestion: {problem.problem}"
    return [{"role": "user", "content": content}]


def template_prompt(problem: Problem, cfg: RootConfig) -> str:
    """The user message of a ``prompt.file`` template with the problem in its slot."""
    # str.replace, not str.format: templates hold literal braces (\\boxed{...}).
    return load_template_file(cfg.prompt.file).replace(QUESTION_SLOT, problem.problem)


def render_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> str:
    """The prompt text for one problem (special tokens included for chat templates)."""
    if cfg.prompt.template == "dataset" and problem.meta.get("prompt_messages") and not use_chat(cfg, tokenizer):
        raise ConfigError("prompt.template=dataset needs a tokenizer with a chat template",
                          "use prompt.template=raw for base models")
    if use_chat(cfg, tokenizer):
        return tokenizer.apply_chat_template(chat_messages(problem, cfg), tokenize=False, add_generation_prompt=True)
    if cfg.prompt.file:
        return template_prompt(problem, cfg)
    return TORL_RAW.format(instruction=instruction_for(cfg, chat=False), problem=problem.problem)


def encode_prompt(problem: Problem, cfg: RootConfig, tokenizer: Any) -> tuple[str, list[int]]:
    """Prompt text and its token ids. Chat templates already contain their special tokens."""
    text = render_prompt(problem, cfg, tokenizer)
    ids = tokenizer(text, add_special_tokens=not use_chat(cfg, tokenizer))["input_ids"]
    return text, list(ids)


def prompt_lengths(problems: Sequence[Problem], cfg: RootConfig, tokenizer: Any) -> list[int]:
    """Token count of each problem's prompt, exactly as ``encode_prompt`` would produce it (batched)."""
    if not problems:
        return []
    texts = [render_prompt(p, cfg, tokenizer) for p in problems]
    ids = tokenizer(texts, add_special_tokens=not use_chat(cfg, tokenizer))["input_ids"]
    return [len(x) for x in ids]
