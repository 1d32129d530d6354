"""Canonical text of an AST node (positions dropped): series keys, fingerprints, messages.

>>> from processors.lang.parser import parse
>>> unparse(parse("count(page_view  where category=='x' , 7d)>=3"))
'(count(page_view where (category == "x"), 604800000ms) >= 3)'
"""

from __future__ import annotations

import json

from processors.lang import ast


def _lit(v: ast.Scalar) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def unparse_events(es: ast.EventSet) -> str:
    text = "|".join(es.types)
    return text if es.filter is None else f"{text} where {unparse(es.filter)}"


def unparse_sequence(seq: ast.Sequence) -> str:
    """Canonical text of ``A then B ... within T [on P]`` (the key of its state)."""
    text = " then ".join(f"({unparse_events(es)})" for es in seq.steps)
    on = "" if seq.on is None else f" on {'props.' if seq.on_extra else ''}{seq.on}"
    return f"{text} within {seq.within_ms}ms{on}"


def unparse(node: ast.Expr) -> str:
    """Fully parenthesised canonical text (durations in ms)."""
    match node:
        case ast.Literal():
            return _lit(node.value)
        case ast.Duration():
            return f"{node.ms}ms"
        case ast.Now():
            return "now"
        case ast.ProfileRef():
            return f"{node.namespace}.{node.field}"
        case ast.PropRef():
            return node.name
        case ast.SegmentRef():
            return f"segment.{node.name}"
        case ast.Aggregate():
            if node.prop is None:
                return f"count({unparse_events(node.events)}, {node.window_ms}ms)"
            es = node.events
            filt = "" if es.filter is None else f" where {unparse(es.filter)}"
            return f"{node.func}({es.types[0]}.{node.prop}{filt}, {node.window_ms}ms)"
        case ast.Instant():
            return f"{node.func}({unparse_events(node.events)})"
        case ast.Since():
            return f"since({unparse_events(node.events)})"
        case ast.Within():
            return f"({unparse(node.instant)} within {node.duration_ms}ms)"
        case ast.ThenNo():
            return (f"({unparse_events(node.first)} then no {unparse_events(node.then)} "
                    f"within {node.within_ms}ms)")
        case ast.Completion():
            return f"{node.func}({unparse_sequence(node.seq)})"
        case ast.HourShare():
            return f"hour_share({unparse_events(node.events)}, {node.from_hour}, {node.to_hour})"
        case ast.DateFunc():
            return f"{node.func}({unparse(node.arg)})"
        case ast.Arith():
            return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
        case ast.Neg():
            return f"(-{unparse(node.item)})"
        case ast.Compare():
            return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
        case ast.Between():
            return (f"({unparse(node.value)} between {unparse(node.low)} "
                    f"and {unparse(node.high)})")
        case ast.In():
            return f"({unparse(node.value)} in [{', '.join(_lit(o) for o in node.options)}])"
        case ast.IsNull():
            return f"({unparse(node.value)} is {'not ' if node.negate else ''}null)"
        case ast.And():
            return "(" + " and ".join(unparse(i) for i in node.items) + ")"
        case ast.Or():
            return "(" + " or ".join(unparse(i) for i in node.items) + ")"
        case ast.Not():
            return f"(not {unparse(node.item)})"
    raise TypeError(f"unknown AST node {type(node).__name__}")
