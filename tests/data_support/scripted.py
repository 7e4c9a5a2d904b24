"""Scripted teacher rewrites for 20 text solutions, one per case build-sft must handle."""

from __future__ import annotations


def _good(a: int, b: int, claimed: int | None = None) -> str:
    out = f"<interpreter>\n{claimed if claimed is not None else a * b}\n</interpreter>\n"
    return (f"We multiply the two numbers.\n<code>\n```python\nprint({a} * {b})\n```\n</code>\n{out}"
            f"So the product is <answer>\\boxed{{{a * b}}}</answer>")


def twenty_rows() -> tuple[list[dict], dict[str, str], dict[str, str]]:
    """20 text solutions, the teacher's scripted rewrites, and the expected fate of each row."""
    rows, answers, fate = [], {}, {}
    for i in range(1, 21):
        tag = f"P{i:02d}"
        a, b = 100 + 7 * i, 200 + 13 * i
        rows.append({"id": f"row-{i:02d}", "question": f"[{tag}] What is {a} times {b}?",
                     "solution": f"Long multiplication gives {a} x {b} = {a * b}. The answer is $\\boxed{{{a * b}}}$."})
        if i <= 12:
            answers[tag], fate[tag] = _good(a, b), "kept"
        elif i <= 14:  # the teacher's claimed interpreter output is wrong: it must be replaced
            answers[tag], fate[tag] = _good(a, b, claimed=a * b + 1), "kept"
        elif i == 15:  # two blocks, no claimed outputs: both are executed and inserted
            answers[tag] = (f"First {a}:\n<code>\n```python\nx = {a}\nprint(x)\n```\n</code>\nthen the product:\n"
                            f"<code>\n```python\nprint({a} * {b})\n```\n</code>\n<answer>\\boxed{{{a * b}}}</answer>")
            fate[tag] = "kept"
        elif i <= 17:  # wrong final answer
            answers[tag], fate[tag] = _good(a, b).replace(f"\\boxed{{{a * b}}}", f"\\boxed{{{a * b + 10}}}"), "wrong_answer"
        elif i == 18:  # unclosed <code>
            answers[tag], fate[tag] = f"<code>\nprint({a} * {b})\n<answer>\\boxed{{{a * b}}}</answer>", "malformed_tags"
        elif i == 19:  # an interpreter block that answers no code
            answers[tag], fate[tag] = f"<interpreter>{a * b}</interpreter>\n<answer>\\boxed{{{a * b}}}</answer>", "malformed_tags"
        else:  # the code fails, the prose still reaches the right answer: kept (not with --require-success)
            answers[tag] = (f"<code>\n```python\nprint(undefined_name)\n```\n</code>\n<interpreter>\n{a * b}\n</interpreter>\n"
                            f"By hand then: <answer>\\boxed{{{a * b}}}</answer>")
            fate[tag] = "kept"
    return rows, answers, fate
