"""Property names of a condition checked against the event types' declared properties.

``sum(purchase.amont, 30d)`` or ``page_view where prce > 3`` would load and silently never
match; the loader rejects them here, with "did you mean". A property an event type does not
declare is written ``props.NAME`` (``page_view where props.ab_variant == "b"``) and is not
checked. The declared properties come from :func:`schemas.eventtypes.property_kinds`
(built-in types, and the custom types of a types file).

>>> from processors.lang.parser import parse
>>> from schemas.eventtypes import property_kinds
>>> try:
...     check_properties(parse("count(page_view where prce > 3, 7d) > 0"), property_kinds(None))
... except DefinitionError as e:
...     print(e.message)
unknown property 'prce' of page_view (did you mean 'price'?); mark an undeclared one: props.prce
>>> check_properties(parse("count(page_view where props.prce > 3, 7d) > 0"), property_kinds(None))
"""

from __future__ import annotations

from collections.abc import Mapping

from processors.lang import ast
from processors.lang.errors import DefinitionError, did_you_mean

Kinds = Mapping[str, Mapping[str, str]]
_SUMMABLE = frozenset({"number", "integer", "any"})


def _declared(types: tuple[str, ...], kinds: Kinds) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in types:
        out.update(kinds.get(t, {}))
    return out


def _unknown(pos: int, name: str, types: tuple[str, ...],
             declared: Mapping[str, str]) -> DefinitionError:
    who = "|".join(types)
    hint = did_you_mean(name, declared)
    if not hint and declared:
        hint = f"; declared: {', '.join(sorted(declared))}"
    return DefinitionError(None, pos, f"unknown property '{name}' of {who}{hint}; mark an "
                                      f"undeclared one: props.{name}")


def _check_filter(node: ast.Expr, types: tuple[str, ...], declared: Mapping[str, str]) -> None:
    if isinstance(node, ast.PropRef):
        if not node.extra and node.name not in declared:
            raise _unknown(node.pos, node.name, types, declared)
        return
    for child in ast.subexpressions(node):
        _check_filter(child, types, declared)


def _check_events(es: ast.EventSet, kinds: Kinds) -> None:
    if es.filter is not None:
        _check_filter(es.filter, es.types, _declared(es.types, kinds))


def check_properties(node: ast.Expr, kinds: Kinds) -> None:
    """Raise DefinitionError (with the position) for a property no selected type declares."""
    match node:
        case ast.Aggregate():
            _check_events(node.events, kinds)
            if node.prop is not None and not node.prop_extra:
                declared = _declared(node.events.types, kinds)
                kind = declared.get(node.prop)
                pos = node.events.pos + len(node.events.types[0]) + 1
                if kind is None:
                    raise _unknown(pos, node.prop, node.events.types, declared)
                if kind not in _SUMMABLE:
                    raise DefinitionError(None, pos, f"{node.func}() needs a number property: "
                                                     f"{node.events.types[0]}.{node.prop} is "
                                                     f"{'an' if kind[0] in 'aeiou' else 'a'} "
                                                     f"{kind}")
            return
        case ast.Instant() | ast.Since() | ast.HourShare():
            _check_events(node.events, kinds)
            return
        case ast.ThenNo():
            _check_events(node.first, kinds)
            _check_events(node.then, kinds)
            return
        case ast.Completion():
            seq = node.seq
            for es in seq.steps:
                _check_events(es, kinds)
                if seq.on is not None and not seq.on_extra:
                    declared = _declared(es.types, kinds)
                    if seq.on not in declared:
                        raise _unknown(seq.pos, seq.on, es.types, declared)
            return
    for child in ast.subexpressions(node):
        check_properties(child, kinds)
