"""Answer extraction, equivalence grading with a hard timeout, and the reward rule.

Importing this package is cheap: math-verify (and sympy) load only inside the grading processes.
"""

from toolrl.reward.extract import extract_answer, last_boxed
from toolrl.reward.grader import Grader, GradingError, default_grader
from toolrl.reward.score import grade_answer, is_equivalent, score

__all__ = [
    "extract_answer",
    "last_boxed",
    "grade_answer",
    "is_equivalent",
    "score",
    "Grader",
    "GradingError",
    "default_grader",
]
