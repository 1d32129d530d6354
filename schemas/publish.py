"""JSON Schema (draft 2020-12) files generated from the models, for website developers.

One file per event type (``page_view.json`` ...), ``event.json`` (any of the 13, discriminated
by ``type``), ``record.json`` (what a raw-topic record holds: one event or an array of them)
and ``segment_change.json``. The files are committed under ``schemas/jsonschema/``; a unit test
regenerates them and fails on any drift, so the published contract always matches the models.

On top of what msgspec derives from the models, three validator rules that JSON Schema can
express are added here (their constants come from the modules that enforce them):

* at least one of ``customer_id`` / ``anonymous_id`` is a string (an ``alias`` needs both);
* property names may not be envelope field names (``RESERVED_NAMES``);
* extra traits are JSON scalars (strings up to ``max_string_chars``).

What stays outside the schema (documented in docs/events.md): the timestamp bounds relative to
the validator's clock, the size limits, and the nesting limit of extra properties.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from schemas.changes import SegmentChange
from schemas.custommodels import build_models
from schemas.eventtypes import EventTypes
from schemas.models import EVENT_CLASSES, RESERVED_NAMES, AliasEvent, Envelope, type_name
from schemas.validation import DEFAULT_LIMITS

Schema = dict[str, Any]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
BASE_ID: Final = "https://segstream.example/schemas/"
_REF: Final = "#/$defs/{name}"


def _routing_rule(both: bool) -> Schema:
    def has(name: str) -> Schema:
        return {"required": [name], "properties": {name: {"type": "string"}}}

    if both:
        return {"allOf": [has("customer_id"), has("anonymous_id")]}
    return {"anyOf": [has("customer_id"), has("anonymous_id")]}


def _decorate(defs: dict[str, Schema], classes: tuple[type[Envelope], ...]) -> None:
    """Add the validator's schema-expressible rules to msgspec's definitions, in place."""
    reserved = {"not": {"enum": sorted(RESERVED_NAMES)}}
    for cls in classes:
        event = defs.get(cls.__name__)
        if event is None:
            continue
        event.update(_routing_rule(cls is AliasEvent))
        props_ref = event["properties"]["properties"]["$ref"]
        defs[props_ref.rsplit("/", 1)[1]]["propertyNames"] = reserved
    if "Traits" in defs:
        defs["Traits"]["additionalProperties"] = {
            "anyOf": [
                {"type": "string", "maxLength": DEFAULT_LIMITS.max_string_chars},
                {"type": ["integer", "number", "boolean", "null"]},
            ]
        }


def _document(name: str, title: str, body: Schema, defs: dict[str, Schema]) -> Schema:
    used = _reachable(body, defs)
    doc: Schema = {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.json", "title": title}
    doc.update(body)
    if used:
        doc["$defs"] = {key: defs[key] for key in sorted(used)}
    return doc


def _reachable(node: object, defs: dict[str, Schema]) -> set[str]:
    """Names of the definitions ``node`` refers to, transitively."""
    seen: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                key = ref.rsplit("/", 1)[1]
                if key not in seen:
                    seen.add(key)
                    stack.append(defs[key])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen


def build_schemas(types: EventTypes | None = None) -> dict[str, Schema]:
    """File name (without ``.json``) -> JSON Schema document; with ``types``, also one file
    per declared custom type, which ``event.json`` and ``record.json`` then accept too."""
    classes = (*EVENT_CLASSES, *build_models(types).values()) if types is not None \
        else EVENT_CLASSES
    (*event_refs, change_ref), defs = msgspec.json.schema_components(
        [*classes, SegmentChange], ref_template=_REF
    )
    defs = copy.deepcopy(defs)
    _decorate(defs, classes)
    out: dict[str, Schema] = {}
    for cls, ref in zip(classes, event_refs, strict=True):
        name = type_name(cls)
        out[name] = _document(name, f"segstream {name} event", ref, defs)
    mapping = {type_name(c): r["$ref"] for c, r in zip(classes, event_refs, strict=True)}
    union: Schema = {
        "description": "Any segstream event; `type` selects the variant.",
        "anyOf": event_refs,
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    out["event"] = _document("event", "segstream event", union, defs)
    defs["Event"] = union
    record: Schema = {
        "description": (
            "A raw-topic record: one event, or an array of at most "
            f"{DEFAULT_LIMITS.max_events_per_record} events."
        ),
        "anyOf": [
            {"$ref": _REF.format(name="Event")},
            {
                "type": "array",
                "items": {"$ref": _REF.format(name="Event")},
                "maxItems": DEFAULT_LIMITS.max_events_per_record,
            },
        ],
    }
    out["record"] = _document("record", "segstream raw record", record, defs)
    title = "segstream segment change"
    out["segment_change"] = _document("segment_change", title, change_ref, defs)
    return out


def render(schema: Schema) -> bytes:
    """Stable text of one schema file (sorted keys, 2-space indent, final newline)."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path, types: EventTypes | None = None) -> list[Path]:
    """Write every schema file into ``directory`` (created if needed); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in build_schemas(types).items():
        path = directory / f"{name}.json"
        path.write_bytes(render(schema))
        written.append(path)
    return written

