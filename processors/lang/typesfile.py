"""Load and check an event-types file (YAML): the custom event types and their properties.

Shape (``docs/events.md``, "Custom event types")::

    version: "2026-12-06.1"
    types:
      - name: video_played            # [a-z][a-z0-9_]*, not a built-in type
        description: A video was watched.
        properties:
          duration_s: {kind: number, required: true, min: 0}
          title: {kind: string}
          quality: {kind: enum, values: [sd, hd, uhd]}

Every problem is reported at once, like the definitions file: each names the file, the line,
the type and the property.

>>> t = load_types('''
... version: "1"
... types:
...   - name: app_session
...     description: The app was used.
...     properties: {minutes: {kind: number, min: 0}}
... ''')
>>> t.version, t.names, t.get("app_session").properties["minutes"].expected()
('1', ('app_session',), 'number >= 0')
>>> load_types('version: "1"\\ntypes: [{name: purchase, description: x}]', name="t.yaml")
Traceback (most recent call last):
...
processors.lang.errors.DefinitionError: t.yaml:2: type 'purchase': name: a built-in type ...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from processors.lang.errors import did_you_mean
from processors.lang.load import _Checker, _Map, _raise, key_line, read_document
from schemas.eventtypes import EXTRA_MARKER, KINDS, EventTypes, PropertyDecl, TypeDecl
from schemas.models import EVENT_TYPES, RESERVED_NAMES

DEFAULT_SOURCE = "types"
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_TOP_KEYS = ("version", "types")
_TYPE_KEYS = ("name", "description", "properties")
_PROP_KEYS = ("kind", "required", "min", "max", "values", "description")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _TypesChecker(_Checker):
    def prop(self, who: str, pname: str, raw: Any, line: int | None) -> PropertyDecl | None:
        head = f"type '{who}': property '{pname}'"
        if not isinstance(raw, dict):
            self.add(line, f"{head}: must be a mapping such as {{kind: string}}")
            return None
        before = len(self.errors)
        for k in raw:
            if k not in _PROP_KEYS:
                self.add(key_line(raw, k), f"{head}: unknown key '{k}'"
                         f"{did_you_mean(str(k), _PROP_KEYS)}; allowed: {', '.join(_PROP_KEYS)}")
        kind = raw.get("kind")
        if kind not in KINDS:
            hint = did_you_mean(str(kind), KINDS) if isinstance(kind, str) else ""
            what = "is required" if kind is None else f"{kind!r} is not a kind{hint}"
            self.add(key_line(raw, "kind"), f"{head}: kind {what}; kinds: {', '.join(KINDS)}")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.add(key_line(raw, "required"), f"{head}: required must be true or false")
        lo, hi = self.bounds(head, raw, kind)
        values = self.values(head, raw, kind)
        desc = raw.get("description", "")
        if not isinstance(desc, str):
            self.add(key_line(raw, "description"), f"{head}: description must be a string")
        if len(self.errors) > before:
            return None
        assert isinstance(kind, str) and isinstance(desc, str)
        return PropertyDecl(kind, required, lo, hi, values, desc.strip())

    def bounds(self, head: str, raw: dict[Any, Any], kind: Any) -> tuple[float | None, ...]:
        bounds: dict[str, float | None] = {}
        for b in ("min", "max"):
            v = raw.get(b)
            bounds[b] = v if _number(v) else None
            if v is None:
                continue
            if kind in KINDS and kind not in ("number", "integer"):
                self.add(key_line(raw, b), f"{head}: {b} applies to kinds number and integer only")
            elif not _number(v):
                self.add(key_line(raw, b), f"{head}: {b} must be a number, not {v!r}")
        lo, hi = bounds["min"], bounds["max"]
        if lo is not None and hi is not None and lo > hi:
            self.add(key_line(raw, "max"), f"{head}: max {hi} is below min {lo}")
        return lo, hi

    def values(self, head: str, raw: dict[Any, Any], kind: Any) -> tuple[str, ...]:
        values = raw.get("values")
        if kind == "enum":
            if (not isinstance(values, list) or not values
                    or not all(isinstance(v, str) and v for v in values)):
                self.add(key_line(raw, "values"),
                         f"{head}: an enum needs values: a non-empty list of strings")
                values = []
            elif len(set(values)) != len(values):
                self.add(key_line(raw, "values"), f"{head}: values has duplicates")
        elif values is not None:
            self.add(key_line(raw, "values"), f"{head}: values applies to kind enum only")
            values = []
        return tuple(values or ())

    def type_(self, raw: Any, index: int, line: int | None) -> TypeDecl | None:
        if not isinstance(raw, dict):
            self.add(line, f"types[{index}] must be a mapping with name, description, "
                           "properties")
            return None
        before = len(self.errors)
        name = raw.get("name")
        who = name if isinstance(name, str) and name else f"types[{index}]"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self.add(key_line(raw, "name"), f"type '{who}': name must match [a-z][a-z0-9_]*")
        elif name in EVENT_TYPES:
            self.add(key_line(raw, "name"),
                     f"type '{who}': name: a built-in type cannot be redefined")
        for k in raw:
            if k not in _TYPE_KEYS:
                self.add(key_line(raw, k), f"type '{who}': unknown key '{k}'"
                         f"{did_you_mean(str(k), _TYPE_KEYS)}; allowed: {', '.join(_TYPE_KEYS)}")
        desc = raw.get("description")
        if not isinstance(desc, str) or not desc.strip():
            self.add(key_line(raw, "description"),
                     f"type '{who}': description: required (a non-empty string)")
        props = self.properties(who, raw)
        if len(self.errors) > before:
            return None
        assert isinstance(name, str) and isinstance(desc, str)
        return TypeDecl(name, desc.strip(), props)

    def properties(self, who: str, raw: dict[Any, Any]) -> dict[str, PropertyDecl]:
        props_raw = raw.get("properties", {})
        props: dict[str, PropertyDecl] = {}
        if not isinstance(props_raw, dict):
            self.add(key_line(raw, "properties"), f"type '{who}': properties must be a mapping "
                     "of property name to {kind: ...}")
            props_raw = {}
        for pname, praw in props_raw.items():
            pline = key_line(props_raw, pname)
            if not isinstance(pname, str) or not _NAME_RE.match(pname):
                self.add(pline, f"type '{who}': property {pname!r}: name must match "
                                "[a-z][a-z0-9_]*")
                continue
            if pname in RESERVED_NAMES or pname == EXTRA_MARKER:
                self.add(pline, f"type '{who}': property '{pname}': the name is reserved")
                continue
            decl = self.prop(who, pname, praw, pline)
            if decl is not None:
                props[pname] = decl
        return props


def load_types(source: str | Path, *, name: str | None = None) -> EventTypes:
    """Parse and check an event-types file given as a path or as YAML text."""
    doc, errors, src = read_document(source, name, DEFAULT_SOURCE, "types")
    check = _TypesChecker(src)
    check.errors.extend(errors)
    check.unknown_keys(doc, _TOP_KEYS, "the file")
    version = check.version(doc)
    raw_types = doc.get("types")
    if not isinstance(raw_types, list):
        check.add(key_line(doc, "types"), "types must be a list (it may be empty: types: [])")
        raw_types = []
    seen: dict[str, int | None] = {}
    out: list[TypeDecl] = []
    for i, raw in enumerate(raw_types):
        line = raw.line if isinstance(raw, _Map) else key_line(doc, "types")
        decl = check.type_(raw, i, line)
        tname = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(tname, str):
            if tname in seen:
                check.add(key_line(raw, "name"), f"type '{tname}': duplicate type name (first on "
                          f"line {seen[tname]})")
                continue
            seen[tname] = key_line(raw, "name")
        if decl is not None:
            out.append(decl)
    if check.errors:
        _raise(check.errors)
    return EventTypes(version, tuple(out))
