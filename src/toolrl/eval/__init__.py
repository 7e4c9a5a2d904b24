"""Benchmarks, evaluation metrics and evaluate(). Importing this package loads no engine."""

from toolrl.eval.benchmarks import BENCHMARK_NAMES, load_problems, load_train_problems
from toolrl.eval.evaluator import EvalResult, eval_protocol, evaluate
from toolrl.eval.metrics import accuracy_metrics, compute_metrics, pass_at_k, tool_metrics

__all__ = [
    "BENCHMARK_NAMES",
    "load_problems",
    "load_train_problems",
    "evaluate",
    "eval_protocol",
    "EvalResult",
    "compute_metrics",
    "accuracy_metrics",
    "tool_metrics",
    "pass_at_k",
]
