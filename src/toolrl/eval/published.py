"""Published scores to compare against (percent), from the ToRL and ReTool papers (see docs/evaluation.md)."""

from __future__ import annotations

# model -> (protocol, {bench: score}); greedy = temperature 0, pass@1; avg@32 = temperature 1.0, top_p 0.7.
PUBLISHED: dict[str, tuple[str, dict[str, float]]] = {
    "Qwen2.5-Math-1.5B-Instruct (no tool)": ("greedy", {"aime24": 10.0, "aime25": 10.0, "math500": 66.0, "olympiadbench": 31.0, "amc23": 62.5}),
    "Qwen2.5-Math-1.5B-Instruct-TIR": ("greedy", {"aime24": 13.3, "aime25": 13.3, "math500": 73.8, "olympiadbench": 41.3, "amc23": 55.0}),
    "ToRL-1.5B (C=1)": ("greedy", {"aime24": 26.7, "aime25": 26.7, "math500": 77.8, "olympiadbench": 44.0, "amc23": 67.5}),
    "Qwen2.5-Math-7B-Instruct-TIR": ("greedy", {"aime24": 26.7, "aime25": 16.7, "math500": 78.8, "olympiadbench": 45.0, "amc23": 70.0}),
    "ToRL-7B": ("greedy", {"aime24": 43.3, "aime25": 30.0, "math500": 82.2, "olympiadbench": 49.9, "amc23": 75.0}),
    "ReTool (Qwen2.5-32B-Instruct)": ("avg@32", {"aime24": 67.0, "aime25": 49.3}),
    "ReTool (DeepSeek-R1-Distill-Qwen-32B)": ("avg@32", {"aime24": 72.5, "aime25": 54.3}),
    "Text-based RL (Qwen2.5-32B-Instruct)": ("avg@32", {"aime24": 40.0, "aime25": 36.7}),
}


def published_for(bench: str) -> list[tuple[str, str, float]]:
    """(model, protocol, score) rows reported for ``bench``."""
    return [(m, proto, s[bench]) for m, (proto, s) in PUBLISHED.items() if bench in s]
