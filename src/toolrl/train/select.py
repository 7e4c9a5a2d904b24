"""Selection steps between scoring and the update (pure: trajectories in, decisions out).

- GRPO-RoC (rStar2-Agent) down-samples oversampled groups (:func:`roc_select`).
- SimpleTIR's void-turn filter and DAPO's overlong filter give whole trajectories zero weight in the loss
  (:func:`loss_keep`); their rewards still count in their group's baseline.
- DAPO's soft over-long punishment shapes the rewards the advantages are computed from (:func:`train_rewards`).
Each returns counts for the step's metrics, so a run shows how often a mechanism acted.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from typing import Sequence

import torch

from toolrl.algos.stabilisers import overlong_penalty, roc_downsample
from toolrl.config.schema import AlgoConfig
from toolrl.reward.extract import extract_answer
from toolrl.types import Trajectory

# A complete code block in one turn (the format's own call syntax; executed or not).
_COMPLETE_CODE = {
    "torl": re.compile(r"```(?:python|py)[^\n]*\n.*?```", re.S),
    "retool": re.compile(r"<code>.*?</code>", re.S),
}
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Finishes where generation was cut from outside: the last turn did not end by the model's choice.
_CUT = ("length", "timeout", "infra_error")


def model_turns(traj: Trajectory) -> list[str]:
    """The text of each model turn: the model's tokens between two observations."""
    return [s.text for s in traj.segments if s.kind == "model"]


def is_void(traj: Trajectory, tool_format: str = "torl") -> bool:
    """SimpleTIR's void turn: some turn of the trajectory holds neither a complete code block nor a final answer
    (typically the model ends its turn, e.g. with EOS right after an observation, having written nothing useful).

    A turn that triggered an execution had a complete code block by construction. The last turn counts as holding
    the final answer when the grader extracted one from the response (``traj.extracted_answer``, so the run's own
    extraction rule decides, e.g. ReTool's last-number fallback); other turns need a ``\boxed{}`` (or answer tag).
    The last turn of a response cut by the token budget, the time limit or a sandbox failure is not judged: it did
    not end by the model's choice (``algo.overlong_filter`` handles truncation). A response with no model turn at
    all is void.
    """
    turns = model_turns(traj)
    if not turns:
        return True
    code = _COMPLETE_CODE.get(tool_format, _COMPLETE_CODE["torl"])
    cut = traj.finish_reason in _CUT
    for i, text in enumerate(turns):
        last = i == len(turns) - 1
        if last and cut:
            continue
        if code.search(text) is not None or extract_answer(text, tool_format) is not None:
            continue
        if last and traj.extracted_answer is not None:
            continue
        return True
    return False


def loss_keep(trajs: Sequence[Trajectory], algo: AlgoConfig, tool_format: str = "torl") -> tuple[list[bool], dict[str, float]]:
    """Which trajectories the loss trains on (False = zero weight): void-turn and overlong filtering.

    Metrics: ``train/void_masked`` (trajectories with a void turn that were masked; counted even when the filter
    is off as ``train/void_turns``), ``train/overlong_masked``.
    """
    keep = [True] * len(trajs)
    void = [is_void(t, tool_format) for t in trajs]
    stats = {"train/void_turns": float(sum(void)), "train/void_masked": 0.0, "train/overlong_masked": 0.0}
    if algo.void_turn_mask:
        keep = [k and not v for k, v in zip(keep, void)]
        stats["train/void_masked"] = float(sum(void))
    if algo.overlong_filter:
        cut = [t.finish_reason == "length" for t in trajs]
        stats["train/overlong_masked"] = float(sum(c and k for c, k in zip(cut, keep)))
        keep = [k and not c for k, c in zip(keep, cut)]
    return keep, stats


def train_rewards(trajs: Sequence[Trajectory], algo: AlgoConfig, max_new_tokens: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The rewards the advantages are computed from: the graded reward plus DAPO's soft over-long penalty
    (``algo.overlong_buffer`` > 0). Metric ``train/overlong_penalized``: responses whose penalty was below 0."""
    rewards = torch.tensor([float(t.reward if t.reward is not None else 0.0) for t in trajs], dtype=torch.float32)
    if algo.overlong_buffer <= 0:
        return rewards, {}
    lengths = torch.tensor([len(t.response_ids) for t in trajs], dtype=torch.long)
    pen = overlong_penalty(lengths, max_new_tokens, algo.overlong_buffer, algo.overlong_penalty_factor)
    return rewards + pen, {"train/overlong_penalized": float((pen < 0).sum().item())}


def roc_penalty(traj: Trajectory, tool_format: str = "torl") -> float:
    """GRPO-RoC's quality penalty of a trajectory: tool errors + format issues (lower = cleaner).

    - tool errors: the share of its calls that failed through the model's code (error, timeout, resource limit);
      a response with no call at all gets 0.5, so a clean tool-using success ranks above a tool-free one.
    - format issues: 1 when it states more than one boxed answer (or, for retool, more than one answer tag).
    """
    judged = [c for c in traj.calls if c.kind.value != "infra_error"]
    p_err = sum(1.0 for c in judged if c.kind.is_model_failure) / len(judged) if judged else 0.5
    text = "".join(model_turns(traj))
    answers = len(_BOXED.findall(text)) if tool_format != "retool" else max(len(_BOXED.findall(text)), text.count("<answer>"))
    p_fmt = 1.0 if answers > 1 else 0.0
    return p_err + p_fmt


def roc_select(trajs: Sequence[Trajectory], keep: int, rng: random.Random,
               tool_format: str = "torl") -> tuple[list[Trajectory], dict[str, float]]:
    """Down-sample every group (samples of one problem) to ``keep`` with :func:`toolrl.algos.roc_downsample`.

    Metrics (counts): ``roc/dropped`` (samples left out), ``roc/dropped_correct`` (successes left out: the rule
    acts on them by quality), ``roc/dropped_penalty`` and ``roc/kept_penalty`` (summed quality penalty of the
    successes left out and kept: divided by their counts they show the rule preferring clean successes).
    """
    groups: "OrderedDict[str, list[Trajectory]]" = OrderedDict()
    for t in trajs:
        groups.setdefault(t.problem.id, []).append(t)
    out: list[Trajectory] = []
    dropped = dropped_correct = 0
    kept_pen = dropped_pen = 0.0
    for members in groups.values():
        correct = [bool(t.correct) for t in members]
        pens = [roc_penalty(t, tool_format) for t in members]
        idx = roc_downsample(correct, pens, keep, rng)
        chosen = set(idx)
        out.extend(members[i] for i in idx)
        dropped += len(members) - len(idx)
        dropped_correct += sum(1 for i, c in enumerate(correct) if c and i not in chosen)
        kept_pen += sum(pens[i] for i in idx if correct[i])
        dropped_pen += sum(p for i, (p, c) in enumerate(zip(pens, correct)) if c and i not in chosen)
    stats = {"roc/dropped": float(dropped), "roc/dropped_correct": float(dropped_correct),
             "roc/kept_penalty": kept_pen, "roc/dropped_penalty": dropped_pen}
    return out, stats
