"""What a piece of model-written code is for, decided by rules over its syntax tree (pure, no model needed).

Labels (ReTool's code-purpose analysis, with a rule set anyone can audit):

- ``verification``: checks a candidate answer: ``assert``, a function named check/verify/is_valid, or a printed or
  tested equality between computed values with no search loop around it;
- ``symbolic``: symbolic algebra: sympy's solve, simplify, expand, factor, diff, integrate, ... ;
- ``enumeration``: brute force: a ``while`` loop, or a loop over ``range``/``itertools`` that tests candidates
  (an ``if`` inside, or a filtered comprehension); a loop that only accumulates is arithmetic;
- ``arithmetic``: numeric computation: arithmetic operators, ``math``/``numpy``/``fractions`` calls;
- ``formatting``: prints or formats data without computing anything;
- ``other``: anything else, including code that does not parse.

The first rule that matches wins, in the order above (an ``assert`` inside a search loop is still a check; a
sympy solve inside a loop is still symbolic).
"""

from __future__ import annotations

import ast

LABELS = ("arithmetic", "symbolic", "enumeration", "verification", "formatting", "other")

_SYMBOLIC_CALLS = {
    "solve", "solveset", "nsolve", "linsolve", "nonlinsolve", "simplify", "expand", "factor", "collect", "cancel",
    "apart", "together", "diff", "integrate", "limit", "series", "dsolve", "Eq", "symbols", "Symbol", "rsolve",
    "trigsimp", "radsimp", "nsimplify", "Poly", "roots", "summation", "product", "lambdify", "subs",
}
_ITER_SOURCES = {"range", "product", "permutations", "combinations", "combinations_with_replacement", "count",
                 "primerange", "divisors"}
_NUMERIC_MODULES = {"math", "numpy", "np", "fractions", "Fraction", "decimal", "Decimal", "cmath", "statistics"}
_CHECK_WORDS = ("check", "verify", "is_valid", "validate", "is_correct", "test_")


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def _root_name(node: ast.expr) -> str:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def _uses_sympy(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sympy" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sympy":
            return True
    return False


def _is_search_loop(node: ast.AST) -> bool:
    """A ``while`` loop, or a loop over range/itertools that tests candidates (an ``if`` in its body, or a filtered
    comprehension). A loop that only accumulates (``result *= x``) is computation, not search."""
    if isinstance(node, ast.While):
        return True
    if isinstance(node, (ast.For, ast.comprehension)):
        over_range = any(isinstance(n, ast.Call) and _call_name(n) in _ITER_SOURCES for n in ast.walk(node.iter))
        if isinstance(node, ast.comprehension):
            return over_range and bool(node.ifs)
        return over_range and any(isinstance(n, ast.If) for stmt in node.body for n in ast.walk(stmt))
    return False


def _is_equality_check(node: ast.AST) -> bool:
    """``a == b`` (or !=) where a side is computed, tested by ``if`` or printed."""
    if not isinstance(node, ast.Compare) or not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
        return False
    return any(not isinstance(side, ast.Constant) for side in [node.left, *node.comparators])


def _checks(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, (ast.FunctionDef, ast.Call)):
            name = node.name if isinstance(node, ast.FunctionDef) else _call_name(node)
            if any(w in name.lower() for w in _CHECK_WORDS):
                return True
    return False


def _printed_or_tested_equality(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "print":
            if any(_is_equality_check(a) for a in node.args):
                return True
        if isinstance(node, ast.If) and _is_equality_check(node.test):
            return True
    return False


def _computes(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.UnaryOp)) and not (
            isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)
        ):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.left.value, str):
                continue  # "%s" % x is formatting
            return True
        if isinstance(node, ast.AugAssign):
            return True
        if isinstance(node, ast.Call):
            if _root_name(node.func) in _NUMERIC_MODULES or _call_name(node) in (
                "sum", "abs", "round", "pow", "divmod", "sqrt", "gcd", "lcm", "factorial", "comb", "perm", "min",
                "max", "int", "float", "Fraction", "isqrt", "log", "exp",
            ):
                return True
    return False


def _prints_or_formats(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and _call_name(n) in ("print", "format", "join") or isinstance(n, ast.JoinedStr)
               for n in ast.walk(tree))


def classify_code(code: str) -> str:
    """One label from ``LABELS`` for a code block.

    >>> classify_code("print(17 * 23)")
    'arithmetic'
    >>> classify_code("from sympy import symbols, solve\\nx = symbols('x')\\nprint(solve(x**2 - 4, x))")
    'symbolic'
    >>> classify_code("count = 0\\nfor n in range(1, 100):\\n    if n % 7 == 3:\\n        count += 1\\nprint(count)")
    'enumeration'
    >>> classify_code("x = 391\\nprint(x == 17 * 23)")
    'verification'
    >>> classify_code("print('The answer is', 42)")
    'formatting'
    >>> classify_code("this is not python")
    'other'
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return "other"
    search = any(_is_search_loop(n) for n in ast.walk(tree))
    if _checks(tree):
        return "verification"
    if _uses_sympy(tree) and any(isinstance(n, ast.Call) and _call_name(n) in _SYMBOLIC_CALLS for n in ast.walk(tree)):
        return "symbolic"
    if search:
        return "enumeration"
    if _printed_or_tested_equality(tree):
        return "verification"
    if _computes(tree):
        return "arithmetic"
    if _prints_or_formats(tree):
        return "formatting"
    return "other"
