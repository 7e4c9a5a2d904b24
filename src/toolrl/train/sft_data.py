"""Cold-start SFT data: code-integrated trajectories as (token ids, loss mask) with observations masked out.

Three sources (files: .jsonl, .json, .parquet, a ``save_to_disk`` directory or a Hub id):
- the project's trajectories (``Trajectory.to_dict`` lines, e.g. ``rollouts.jsonl`` of ``toolrl eval``
  or the file ``train.stage=distill`` writes): token ids and masks are used exactly as recorded;
- chat messages, ``{"messages": [{"role": "user", ...}, {"role": "assistant", "content": ...}]}`` (the released
  ReTool-SFT, or ``toolrl data build-sft`` output): the last assistant message is trained on, except its
  interpreter output blocks (```output / <interpreter>);
- generated solutions of the built-in arithmetic task: real code, really executed in the sandbox, so every
  observation in the trace is what the sandbox printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from toolrl.config.schema import RootConfig
from toolrl.errors import DataError
from toolrl.types import Problem, ToolCall, Trajectory

Example = tuple[list[int], list[int]]  # (token ids of prompt + response, loss mask over the same tokens)

_OBSERVATION = {
    "torl": re.compile(r"```output\n.*?```\n?", re.DOTALL),
    "retool": re.compile(r"\n?<interpreter>.*?</interpreter>\n?", re.DOTALL),
}


def trajectory_example(traj: Trajectory) -> Example:
    """Prompt tokens are context (mask 0); response tokens keep their rollout mask (observations 0)."""
    return list(traj.prompt_ids) + list(traj.response_ids), [0] * len(traj.prompt_ids) + list(traj.loss_mask)


def split_observations(text: str, tool_format: str) -> list[tuple[str, bool]]:
    """Cut an assistant message into (piece, is_observation) runs.

    >>> split_observations("```python\\nprint(2)\\n```\\n```output\\n2\\n```\\nSo 2.", "torl")
    [('```python\\nprint(2)\\n```\\n', False), ('```output\\n2\\n```\\n', True), ('So 2.', False)]
    """
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _OBSERVATION[tool_format].finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def observation_format(text: str, default: str) -> str:
    """Which observation blocks a message holds: ReTool's <interpreter> or ToRL's ```output (else ``default``),
    so a ReTool-SFT file is masked right whatever ``tool.format`` the run uses.

    >>> observation_format("<code>x</code><interpreter>1</interpreter>", "torl"), observation_format("hi", "torl")
    ('retool', 'torl')
    """
    if "<interpreter>" in text:
        return "retool"
    if "```output" in text:
        return "torl"
    return default


def chat_example(messages: list[dict[str, str]], tokenizer: Any, tool_format: str) -> Example:
    """The last assistant message is the target; everything before it (chat template included) is the prompt."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        raise DataError("a chat example has no assistant message", 'each line needs {"messages": [..., {"role": "assistant", ...}]}')
    prompt = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    mask = [0] * len(ids)
    content = messages[last]["content"]
    # Pieces are tokenized on their own, as in a rollout where each observation is appended as its own tokens.
    for piece, is_obs in split_observations(content, observation_format(content, tool_format)):
        piece_ids = list(tokenizer(piece, add_special_tokens=False)["input_ids"])
        ids += piece_ids
        mask += [0 if is_obs else 1] * len(piece_ids)
    if tokenizer.eos_token_id is not None:  # learn to stop after the answer
        ids.append(int(tokenizer.eos_token_id))
        mask.append(1)
    return ids, mask


def _row_example(row: dict[str, Any], where: str, tokenizer: Any, tool_format: str, messages_key: str | None,
                 vocab: int) -> Example | None:
    """One SFT row as an Example; None for a trajectory graded wrong (a wrong trace teaches the wrong thing)."""
    from toolrl.data.columns import get_field, is_messages, normalize_messages

    if "response_ids" in row and "prompt_ids" in row and not messages_key:
        if row.get("correct") is False:
            return None
        ex = trajectory_example(Trajectory.from_dict(row))
        if ex[0] and max(ex[0]) >= vocab:
            raise DataError(f"{where} holds token ids beyond this tokenizer's vocabulary ({vocab})",
                            "trajectories must come from a model with the same tokenizer; use chat messages otherwise")
        return ex
    for key in ([messages_key] if messages_key else ("messages", "conversations", "prompt")):
        value = get_field(row, key)
        if is_messages(value):
            return chat_example(normalize_messages(value), tokenizer, tool_format)
    raise DataError(f"{where} is neither a trajectory nor a chat example",
                    'expected Trajectory.to_dict() fields or {"messages": [...]} (or set sft.messages_key=COLUMN)')


def load_sft_file(path: str | Path, tokenizer: Any, tool_format: str, limit: int | None = None,
                  messages_key: str | None = None) -> list[Example]:
    """Examples from trajectories or chat messages (both may be mixed) in a .jsonl/.json/.parquet file, a
    ``save_to_disk`` directory or a Hub id (train split). Chat messages may be ShareGPT-style (from/value); their
    observation blocks (```output or <interpreter>, as in the released ReTool-SFT) are masked."""
    from toolrl.data.readers import read_rows

    p = Path(path)
    if str(path).endswith((".jsonl", ".json", ".parquet")) and not p.is_file():
        raise DataError(f"SFT data file '{path}' does not exist", "set sft.data to a data file, or leave it empty for generated arithmetic traces")
    rowset = read_rows(str(path), default_split="train")
    vocab = len(tokenizer)
    out: list[Example] = []
    for row, where in zip(rowset.rows, rowset.where):
        ex = _row_example(row, where, tokenizer, tool_format, messages_key, vocab)
        if ex is not None:
            out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"SFT data file '{path}' holds no usable example", "check the file (wrong answers are skipped)")
    return out


# -- generated arithmetic traces ----------------------------------------------------------------------------

_LEADS = ["", "Let me compute it.\n"]  # short: every response token costs time on a CPU
_ENDS = ["The answer is \\boxed{{{ans}}}.", "So the result is \\boxed{{{ans}}}.", "\\boxed{{{ans}}}"]


def arith_trajectories(problems: Sequence[Problem], cfg: RootConfig, tokenizer: Any, sandbox: Any) -> list[Trajectory]:
    """A code-integrated solution per problem, executed for real; traces whose output is not the answer are left out."""
    from toolrl.reward import score
    from toolrl.rollout.formats import format_observation
    from toolrl.rollout.prompts import encode_prompt

    fmt = cfg.tool.format
    eos = tokenizer.eos_token_id
    out = []
    for i, p in enumerate(problems):
        expr = p.meta.get("expression")
        if not expr:
            continue
        code = f"print({expr})"
        lead = _LEADS[i % len(_LEADS)]
        call = f"{lead}```python\n{code}\n```\n" if fmt == "torl" else f"{lead}<code>\n```python\n{code}\n```\n</code>"
        result = sandbox.run(code, timeout_s=cfg.tool.timeout_s)
        answer = result.stdout.strip()
        if answer != p.answer:
            continue  # the trace must be true: only keep what the sandbox really printed
        text, ids = encode_prompt(p, cfg, tokenizer)
        traj = Trajectory(problem=p, sample_index=0, prompt_text=text, prompt_ids=list(ids))
        traj.append("model", call, _encode(tokenizer, call))
        obs = format_observation(result, cfg.tool, turn_text=call)
        traj.append("observation", obs, _encode(tokenizer, obs))
        traj.calls.append(ToolCall(code=code, kind=result.kind, observation=obs, stdout=result.stdout))
        end = _ENDS[i % len(_ENDS)].format(ans=answer)
        if fmt == "retool":
            end = f"<answer>{end}</answer>"
        end_ids = _encode(tokenizer, end) + ([int(eos)] if eos is not None else [])
        traj.append("model", end + (tokenizer.eos_token or "" if eos is not None else ""), end_ids)
        traj.finish_reason = "eos"
        score(traj, cfg.reward, fmt)
        if traj.correct:
            out.append(traj)
    return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
