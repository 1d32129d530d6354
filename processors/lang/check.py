"""Static type checking of a parsed condition, with positions in the error messages.

Kinds: ``bool``, ``number``, ``duration``, ``instant``, ``string``, ``null`` (the literal) and
``any`` (a trait or an event property: unknown until run time). Besides kinds, the checker
tracks whether a value *varies with now* (``now``, ``since(...)`` and arithmetic on them): such
values may only be compared (``< <= > >= == != between``) so that the compiler can compute the
exact instant where the comparison flips.

>>> from processors.lang.parser import parse
>>> check_condition(parse('count(purchase, 30d) > "x"'))
Traceback (most recent call last):
...
processors.lang.errors.DefinitionError: condition col 22: cannot compare number with string
"""

from __future__ import annotations

from typing import NamedTuple

from processors.lang import ast
from processors.lang.errors import DefinitionError
from processors.lang.values import to_date


class T(NamedTuple):
    kind: str
    varies: bool = False  # depends (linearly) on now


_NUMERIC = frozenset({"number", "duration", "instant", "any"})
_PROFILE_KINDS = {
    ("cart", "items"): "number", ("cart", "lines"): "number", ("cart", "value"): "number",
    ("cart", "last_change"): "instant", ("purchases", "count"): "number",
    ("purchases", "total"): "number", ("purchases", "aov"): "number",
    ("purchases", "first"): "instant", ("purchases", "last"): "instant",
}
# (op, left, right) -> result for arithmetic
_ARITH = {
    ("+", "number", "number"): "number", ("+", "duration", "duration"): "duration",
    ("+", "instant", "duration"): "instant", ("+", "duration", "instant"): "instant",
    ("-", "number", "number"): "number", ("-", "duration", "duration"): "duration",
    ("-", "instant", "duration"): "instant", ("-", "instant", "instant"): "duration",
    ("*", "number", "number"): "number", ("*", "duration", "number"): "duration",
    ("*", "number", "duration"): "duration", ("/", "number", "number"): "number",
    ("/", "duration", "number"): "duration", ("/", "duration", "duration"): "number",
}
_HINT = {
    ("duration", "number"): " (write a duration such as 30d)",
    ("number", "duration"): " (write a duration such as 30d)",
    ("instant", "string"): ' (use date("YYYY-MM-DD") for a calendar date)',
    ("string", "instant"): ' (use date("YYYY-MM-DD") for a calendar date)',
}


def _err(pos: int, msg: str) -> DefinitionError:
    return DefinitionError(None, pos, msg)


def _a(kind: str) -> str:
    """The kind with its article, for messages."""
    if kind == "any":
        return "a trait or property value"
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _literal_kind(v: ast.Scalar) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "null"


def _comparable(pos: int, a: T, b: T, ordering: bool) -> None:
    if "null" in (a.kind, b.kind):
        raise _err(pos, "comparing with null is always false: use 'is null' / 'is not null'")
    if ordering and "bool" in (a.kind, b.kind):
        raise _err(pos, "booleans have no order: use == or !=")
    if a.kind != b.kind and "any" not in (a.kind, b.kind):
        raise _err(pos, f"cannot compare {a.kind} with {b.kind}{_HINT.get((a.kind, b.kind), '')}")


def check(node: ast.Expr) -> T:
    """The kind of ``node``; raises DefinitionError (pos only, no segment) on a type error."""
    match node:
        case ast.Literal():
            return T(_literal_kind(node.value))
        case ast.Duration():
            return T("duration")
        case ast.Now():
            return T("instant", True)
        case ast.ProfileRef():
            return T(_PROFILE_KINDS.get((node.namespace, node.field), "any"))
        case ast.PropRef():
            return T("any")
        case ast.SegmentRef():
            return T("bool")  # whether NAME exists is the loader's check (it sees the file)
        case ast.Aggregate():
            _check_events(node.events)
            return T("number")
        case ast.Instant():
            _check_events(node.events)
            return T("instant")
        case ast.Since():
            _check_events(node.events)
            return T("duration", True)
        case ast.Within():
            x = check(node.instant)
            if x.kind not in ("instant", "any"):
                raise _err(node.instant.pos, f"'within' needs an instant (such as last(...) or "
                                             f"date(...)), not {_a(x.kind)}")
            if x.varies:
                raise _err(node.instant.pos, "'within' needs an instant that does not depend "
                                             "on now (compare instead: X > now - 30d)")
            return T("bool")
        case ast.ThenNo():
            _check_events(node.first)
            _check_events(node.then)
            return T("bool")
        case ast.Completion():
            for es in node.seq.steps:
                _check_events(es)
            return T("instant") if node.func == "last" else T("duration", True)
        case ast.HourShare():
            _check_events(node.events)
            return T("number")
        case ast.DateFunc():
            a = check(node.arg)
            if a.kind not in ("string", "instant", "any"):
                raise _err(node.arg.pos, f"{node.func}() needs a date string or an instant, "
                                         f"not {_a(a.kind)}")
            if a.varies:
                raise _err(node.arg.pos, f"{node.func}() of a value depending on now "
                                         "is not supported")
            if isinstance(node.arg, ast.Literal) and to_date(node.arg.value) is None:
                raise _err(node.arg.pos, f"{node.func}(): {node.arg.value!r} is not a date "
                                         "(YYYY-MM-DD with ASCII digits, a real calendar day)")
            return T("instant" if node.func == "date" else "number")
        case ast.Arith():
            return _check_arith(node)
        case ast.Neg():
            x = check(node.item)
            if x.kind not in ("number", "duration", "any"):
                raise _err(node.pos, f"cannot negate {_a(x.kind)}")
            return x
        case ast.Compare():
            a, b = check(node.left), check(node.right)
            _comparable(node.pos, a, b, node.op not in ("==", "!="))
            return T("bool")
        case ast.Between():
            v, lo, hi = check(node.value), check(node.low), check(node.high)
            _comparable(node.pos, v, lo, True)
            _comparable(node.pos, v, hi, True)
            return T("bool")
        case ast.In():
            v = check(node.value)
            if v.varies:
                raise _err(node.pos, "'in' of a value depending on now: use between")
            for o in node.options:
                _comparable(node.pos, v, T(_literal_kind(o)), False)
            return T("bool")
        case ast.IsNull():
            check(node.value)
            return T("bool")
        case ast.And() | ast.Or():
            for item in node.items:
                _need_bool(item)
            return T("bool")
        case ast.Not():
            _need_bool(node.item)
            return T("bool")
    raise TypeError(f"unknown AST node {type(node).__name__}")


def _need_bool(node: ast.Expr) -> None:
    k = check(node).kind
    if k != "bool":
        hint = " (compare it, e.g. trait.vip == true)" if k == "any" else ""
        raise _err(node.pos, f"expected a condition (true/false), found {_a(k)}{hint}")


def _check_arith(node: ast.Arith) -> T:
    a, b = check(node.left), check(node.right)
    for side, k in ((node.left, a.kind), (node.right, b.kind)):
        if k not in _NUMERIC:
            raise _err(side.pos, f"cannot use {_a(k)} in arithmetic ('{node.op}')")
    if node.op == "*" and a.varies and b.varies:
        raise _err(node.pos, "cannot multiply two values that depend on now")
    if node.op == "/" and b.varies:
        raise _err(node.pos, "cannot divide by a value that depends on now")
    varies = a.varies or b.varies
    if "any" in (a.kind, b.kind):
        return T("any", varies)
    kind = _ARITH.get((node.op, a.kind, b.kind))
    if kind is None:
        raise _err(node.pos, f"cannot compute {a.kind} {node.op} {b.kind}")
    return T(kind, varies)


_FILTER_NODES = (
    ast.PropRef, ast.Literal, ast.Duration, ast.Compare, ast.Between, ast.In, ast.IsNull,
    ast.And, ast.Or, ast.Not, ast.Arith, ast.Neg,
)


def _filter_nodes(node: ast.Expr) -> None:
    """A ``where`` filter looks at one event only: no now, no profile values, no calls."""
    if not isinstance(node, _FILTER_NODES):
        raise _err(node.pos, "a 'where' filter may only use the event's properties and literals")
    for child in ast.subexpressions(node):
        _filter_nodes(child)


def _check_events(es: ast.EventSet) -> None:
    if es.filter is not None:
        _filter_nodes(es.filter)
        _need_bool(es.filter)


def check_condition(node: ast.Expr) -> None:
    """Raise DefinitionError unless ``node`` is a well-typed condition (a boolean)."""
    _need_bool(node)
