"""msgspec models of declared custom event types, built at run time from a types file.

Each custom type becomes an :class:`schemas.models.Envelope` subclass tagged with its name, so
the validator converts custom events with the same C code, in the same tagged union, as the
built-in ones (the 30%-custom stream of ``make bench-ingest`` stays as fast as built-ins).

>>> from schemas.eventtypes import EventTypes, PropertyDecl, TypeDecl
>>> t = EventTypes("1", (TypeDecl("video_played", "", {
...     "duration_s": PropertyDecl("number", required=True, min=0)}),))
>>> cls = build_models(t)["video_played"]
>>> msgspec.convert({"event_id": "e", "type": "video_played", "timestamp": 1,
...                  "properties": {"duration_s": 3}}, cls).properties.duration_s
3.0
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas.eventtypes import EventTypes, PropertyDecl
from schemas.models import Envelope, Label, Timestamp, _Props

_PLAIN: dict[str, Any] = {"string": Label, "boolean": bool, "timestamp": Timestamp}


def property_type(d: PropertyDecl) -> Any:
    """The msgspec type of one declared property (``T | None`` when it is optional)."""
    t: Any
    doc = d.description or None
    if d.kind in ("number", "integer"):
        base: Any = float if d.kind == "number" else int
        t = Annotated[base, Meta(ge=d.min, le=d.max, description=doc)] \
            if (d.min, d.max) != (None, None) or doc else base
    elif d.kind == "enum":
        t = Literal[d.values]
    else:
        t = _PLAIN[d.kind]
    if doc and d.kind not in ("number", "integer"):
        t = Annotated[t, Meta(description=doc)]
    return t if d.required else t | None


def build_models(types: EventTypes) -> dict[str, type[Envelope]]:
    """Custom type name -> its event class (an Envelope subclass tagged with the name)."""
    out: dict[str, type[Envelope]] = {}
    for decl in types.types:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for name, d in decl.properties.items():
            typ = property_type(d)
            fields.append((name, typ) if d.required else (name, typ, None))
        props = msgspec.defstruct(f"{decl.name}_properties", fields, bases=(_Props,),
                                  kw_only=True, omit_defaults=True, gc=False)
        props.__doc__ = f"Properties of a {decl.name} event (custom type)."
        default = msgspec.field(default_factory=props) if not any(
            d.required for d in decl.properties.values()) else msgspec.NODEFAULT
        field: tuple[str, Any] | tuple[str, Any, Any] = (
            ("properties", props) if default is msgspec.NODEFAULT
            else ("properties", props, default))
        cls = msgspec.defstruct(f"{decl.name}_event", [field], bases=(Envelope,), tag=decl.name,
                                kw_only=True, gc=False)
        cls.__doc__ = decl.description or f"A {decl.name} event (custom type)."
        out[decl.name] = cls  # type: ignore[assignment]
    return out
