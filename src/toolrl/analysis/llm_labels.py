"""Code purpose labelled by a language model through any toolrl Engine: the model names a label, toolrl parses
and counts. The rule-based labels (``purpose.classify_code``) stay the reference; this is a second opinion, and
the agreement between the two is reported with it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Sequence

from toolrl.analysis.purpose import LABELS, classify_code
from toolrl.rollout.engine import Engine, GenRequest, SamplingSpec

QUESTION = (
    "What is this Python code mainly for? Answer with exactly one word from this list: arithmetic (numeric "
    "computation), symbolic (algebra with sympy), enumeration (brute-force search or counting), verification "
    "(checking a candidate answer), formatting (printing or formatting data), other.\n\n```python\n{code}\n```"
)
_WORD = re.compile(r"[a-z]+")


def parse_label(text: str) -> str | None:
    """The first label word in the model's answer, or None when it names none.

    >>> parse_label(" Symbolic."), parse_label("It is enumeration"), parse_label("no idea")
    ('symbolic', 'enumeration', None)
    """
    for word in _WORD.findall(text.lower()):
        if word in LABELS:
            return word
    return None


def _prompt_ids(tokenizer: Any, code: str) -> list[int]:
    text = QUESTION.format(code=code.strip()[:2000])
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return list(ids)
    return list(tokenizer(text + "\nAnswer:", add_special_tokens=True)["input_ids"])


def label_blocks(codes: Sequence[str], engine: Engine, *, batch_size: int = 16, max_new_tokens: int = 8,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Ask ``engine`` (greedy) for the purpose of every block; return shares, counts, unparsed answers and the
    agreement with the rule-based labels (None when nothing was labelled)."""
    tok = engine.tokenizer
    answers: list[str | None] = []
    for start in range(0, len(codes), batch_size):
        chunk = codes[start:start + batch_size]
        reqs = [GenRequest(_prompt_ids(tok, c), max_new_tokens, stop=["\n"], request_id=f"label-{start + i}")
                for i, c in enumerate(chunk)]
        outs = engine.generate(reqs, SamplingSpec(temperature=0.0))
        answers += [parse_label(tok.decode(o.token_ids, skip_special_tokens=True)) for o in outs]
        if progress is not None:
            progress(len(chunk))
    counts = Counter(a for a in answers if a is not None)
    labelled = sum(counts.values())
    rules = [classify_code(c) for c in codes]
    agree = [a == r for a, r in zip(answers, rules) if a is not None]
    return {
        "blocks": len(codes),
        "unparsed": len(answers) - labelled,
        "counts": {lab: counts[lab] for lab in LABELS},
        "shares": {lab: counts[lab] / labelled for lab in LABELS} if labelled else None,
        "rules_shares": {lab: rules.count(lab) / len(rules) for lab in LABELS} if rules else None,
        "agreement_with_rules": sum(agree) / len(agree) if agree else None,
        "labels": answers,
    }
