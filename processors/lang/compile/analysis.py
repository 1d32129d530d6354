"""Static facts about condition ASTs: constants, null-on-empty, the properties a filter
reads."""

from __future__ import annotations

from processors.lang import ast
from processors.lang.values import is_number


def walk(node: ast.Expr) -> list[ast.Expr]:
    out = [node]
    for c in ast.subexpressions(node):
        out += walk(c)
    return out


NULL_FIELDS = {("cart", "last_change"), ("purchases", "first"), ("purchases", "last"),
                ("purchases", "aov")}


def null_on_empty(node: ast.Expr) -> bool:
    """Whether ``node`` is null for a customer with no data (whatever now is)."""
    match node:
        case ast.ProfileRef():
            return node.namespace == "trait" or (node.namespace, node.field) in NULL_FIELDS
        case ast.Instant() | ast.Since() | ast.HourShare() | ast.Completion():
            return True
        case ast.Aggregate():
            return node.func == "avg"
        case ast.Literal():
            return node.value is None
        case ast.Arith():
            return null_on_empty(node.left) or null_on_empty(node.right)
        case ast.Neg():
            return null_on_empty(node.item)
        case ast.DateFunc():
            return null_on_empty(node.arg)
    return False


def constant_when_empty(node: ast.Expr) -> bool:
    """Whether the condition's value for a customer with no data is the same at every instant
    (no ``now``, no calendar or ``within`` of a value that is not null then)."""
    for n in walk(node):
        if isinstance(n, ast.Now):
            return False
        if isinstance(n, ast.Within) and not null_on_empty(n.instant):
            return False
        if isinstance(n, ast.DateFunc) and n.func != "date" and not null_on_empty(n.arg):
            return False
    return True



FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def num_literal(node: ast.Expr) -> float | None:
    if isinstance(node, ast.Literal) and is_number(node.value):
        return float(node.value)  # type: ignore[arg-type]
    return None



def is_count(node: ast.Expr) -> bool:
    return isinstance(node, ast.Aggregate) and node.func == "count"



def prop_names(node: ast.Expr | None) -> frozenset[str]:
    """The event properties a ``where`` filter reads (iterative: filters may be deep)."""
    names: set[str] = set()
    todo = [] if node is None else [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.PropRef):
            names.add(n.name)
        todo.extend(ast.subexpressions(n))
    return frozenset(names)

