"""Segments built from segments: ``segment.NAME`` references.

The loader (:func:`resolve`) rejects unknown names (with "did you mean"), references to
disabled segments and cycles (naming the cycle), and orders the segments so that every segment
comes after those it references (file order otherwise). The compiler (:func:`expand`) replaces
each reference by the referenced condition, itself expanded: a reference is true exactly when
the referenced segment's condition is, at the same instant, so one event or due instant
changes a segment and its dependents in the same step, with the same cause and instant, and
the next-change instants of the dependents come from the referenced conditions' own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from processors.lang import ast
from processors.lang.errors import DefinitionError, did_you_mean


def references(node: ast.Expr) -> Iterator[ast.SegmentRef]:
    """The ``segment.NAME`` nodes in ``node`` (filters cannot hold any)."""
    if isinstance(node, ast.SegmentRef):
        yield node
        return
    for sub in ast.subexpressions(node):
        yield from references(sub)


def expand(node: ast.Expr, conditions: Mapping[str, ast.Expr]) -> ast.Expr:
    """``node`` with every reference replaced by its segment's (already expanded) condition."""
    if isinstance(node, ast.SegmentRef):
        return conditions[node.name]
    subs = ast.subexpressions(node)
    if not any(True for _ in _refs_in(subs)):
        return node
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, tuple) and value and all(isinstance(v, ast.Node) for v in value):
            changes[f.name] = tuple(expand(v, conditions) for v in value)
        elif isinstance(value, ast.Node) and not isinstance(value, ast.EventSet):
            changes[f.name] = expand(value, conditions)  # type: ignore[arg-type]
    new: ast.Expr = dataclasses.replace(node, **changes)
    return new


def _refs_in(nodes: tuple[ast.Expr, ...]) -> Iterator[ast.SegmentRef]:
    for n in nodes:
        yield from references(n)


def expanded_conditions(segments: tuple[ast.SegmentDef, ...]) -> dict[str, ast.Expr]:
    """Name -> condition with references expanded, for segments in dependency order."""
    out: dict[str, ast.Expr] = {}
    for seg in segments:
        out[seg.name] = expand(seg.condition, out)
    return out


RefError = Callable[[str, ast.SegmentRef | None, str], DefinitionError]


def resolve(segments: list[ast.SegmentDef], error: RefError,
            ) -> tuple[list[ast.SegmentDef], list[DefinitionError]]:
    """Check the references of ``segments`` and order them by dependency.

    ``error(segment name, reference or None, message)`` builds a located error. Returns the
    ordered segments (unchanged order when nothing references a later segment) and the errors.
    """
    deps, errors = _dependencies(segments, error)
    if errors:
        return segments, errors
    return _ordered(segments, deps, error)


def _dependencies(segments: list[ast.SegmentDef], error: RefError,
                  ) -> tuple[dict[str, list[str]], list[DefinitionError]]:
    by_name = {s.name: s for s in segments}
    errors: list[DefinitionError] = []
    deps: dict[str, list[str]] = {}
    for seg in segments:
        names: list[str] = []
        for ref in references(seg.condition):
            target = by_name.get(ref.name)
            if target is None:
                hint = did_you_mean(ref.name, sorted(n for n in by_name if n != seg.name))
                errors.append(error(seg.name, ref, f"unknown segment '{ref.name}'{hint}"))
            elif not target.enabled:
                errors.append(error(seg.name, ref, f"segment '{ref.name}' is disabled: a "
                                                   "disabled segment has no members to refer to"))
            elif seg.enabled and ref.name not in names:
                names.append(ref.name)
        deps[seg.name] = names
    return deps, errors


def _ordered(segments: list[ast.SegmentDef], deps: dict[str, list[str]], error: RefError,
             ) -> tuple[list[ast.SegmentDef], list[DefinitionError]]:
    """Depth-first: each segment after its dependencies, file order otherwise."""
    by_name = {s.name: s for s in segments}
    order: list[ast.SegmentDef] = []
    state: dict[str, int] = {}  # 1: on the path, 2: placed

    def visit(name: str, path: list[str]) -> DefinitionError | None:
        if state.get(name) == 2:
            return None
        if state.get(name) == 1:
            cycle = [*path[path.index(name):], name]
            return error(cycle[0], None,
                         "segments refer to each other in a cycle: " + " -> ".join(cycle))
        state[name] = 1
        for dep in deps[name]:
            found = visit(dep, [*path, name])
            if found is not None:
                return found
        state[name] = 2
        order.append(by_name[name])
        return None

    for seg in segments:
        found = visit(seg.name, [])
        if found is not None:
            return segments, [found]
    return order, []
