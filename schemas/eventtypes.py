"""Event types and their properties: the 13 built-in ones and the custom ones of a types file.

A *types file* (``docs/events.md``, "Custom event types"; loaded by
:mod:`processors.lang.typesfile`) declares custom event types. :class:`EventTypes` is what it
holds once checked; :func:`property_kinds` is the one place that knows the properties of every
type (built-in from :mod:`schemas.models`, custom from the declarations), used by the
definitions loader to check property names, and by the validator to build custom models.

>>> property_kinds(None)["purchase"]["amount"], property_kinds(None)["page_view"]["url"]
('number', 'string')
>>> t = EventTypes("1", (TypeDecl("video_played", "", {"duration_s": PropertyDecl("number")}),))
>>> property_kinds(t)["video_played"]
{'duration_s': 'number'}
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from schemas.models import EVENT_TYPES, properties_class

#: the kinds a custom property may declare
KINDS: Final[tuple[str, ...]] = ("string", "number", "integer", "boolean", "enum", "timestamp")
#: the marker of an undeclared ("extra") property in a condition: ``props.my_field``
EXTRA_MARKER: Final = "props"


@dataclass(frozen=True, slots=True)
class PropertyDecl:
    """One declared property: its kind and constraints (``min``/``max`` for number, integer)."""

    kind: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    description: str = ""

    def expected(self) -> str:
        """The expected value, for messages: ``number >= 0``, ``one of sd, hd``."""
        if self.kind == "enum":
            return "one of " + ", ".join(self.values)
        if self.kind == "timestamp":
            return "timestamp (integer epoch ms, or RFC 3339 date-time with an offset)"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return " ".join([self.kind, *bounds]) if self.kind in ("number", "integer") and bounds \
            else self.kind


@dataclass(frozen=True, slots=True)
class TypeDecl:
    """One declared custom event type."""

    name: str
    description: str
    properties: Mapping[str, PropertyDecl] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventTypes:
    """The custom types of one types file (``version`` stamps it on the topic)."""

    version: str
    types: tuple[TypeDecl, ...] = ()

    def get(self, name: str) -> TypeDecl | None:
        for t in self.types:
            if t.name == name:
                return t
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)


def _kind_of(t: Any) -> str:
    """The kind of a msgspec type (``None`` members of a union stripped)."""
    if isinstance(t, msgspec.inspect.Metadata):
        return _kind_of(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        kinds = {_kind_of(m) for m in t.types if not isinstance(m, msgspec.inspect.NoneType)}
        return kinds.pop() if len(kinds) == 1 else "any"
    table: dict[type, str] = {
        msgspec.inspect.StrType: "string", msgspec.inspect.FloatType: "number",
        msgspec.inspect.IntType: "integer", msgspec.inspect.BoolType: "boolean",
        msgspec.inspect.LiteralType: "enum", msgspec.inspect.DateType: "date",
        msgspec.inspect.DateTimeType: "timestamp", msgspec.inspect.ListType: "array",
        msgspec.inspect.StructType: "object",
    }
    return table.get(type(t), "any")


def _builtin() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, cls in EVENT_TYPES.items():
        info = msgspec.inspect.type_info(properties_class(cls))
        out[name] = {f.name: _kind_of(f.type) for f in info.fields}  # type: ignore[attr-defined]
    return out


#: built-in type -> property -> kind (string, number, integer, enum, date, array, object, ...)
BUILTIN_PROPERTIES: Final[Mapping[str, Mapping[str, str]]] = _builtin()


def property_kinds(types: EventTypes | None) -> dict[str, Mapping[str, str]]:
    """Every event type's declared properties and their kinds: built-ins, then ``types``."""
    out: dict[str, Mapping[str, str]] = dict(BUILTIN_PROPERTIES)
    for t in types.types if types is not None else ():
        out[t.name] = {p: d.kind for p, d in t.properties.items()}
    return out


def timestamp_ms(value: int | _dt.datetime) -> int:
    """Epoch milliseconds of a validated timestamp property value."""
    if type(value) is int:
        return value
    assert isinstance(value, _dt.datetime)
    delta = value - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000 + delta.microseconds // 1_000
