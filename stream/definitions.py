"""Segment definitions at runtime: the document on the definitions topic, and its readers.

``segstream segments apply FILE`` validates a definitions file and publishes it as one record
(key ``catalogue``) on the compacted, single-partition definitions topic. Every worker reads
the topic to its end before it processes bundles, then follows it: a record whose ``version``
differs from the running one is compiled and swapped in without a restart, and each owned
partition is re-evaluated from the stored states (new or changed segments ENTER/EXIT existing
customers at once; a removed segment EXITs its members, cause ``definitions:<version>``).

The document::

    {"version": "2026-11-23.2", "text": "<the YAML file>", "published_at": 1795400000000}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import orjson

from processors.lang.ast import Catalogue
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from schemas.errors import SegstreamError
from schemas.eventtypes import EventTypes

DOCUMENT_KEY = b"catalogue"


class DefinitionsDocError(SegstreamError, ValueError):
    """A definitions-topic record that is not a definitions document."""


def encode_document(version: str, text: str, published_at: int) -> bytes:
    """The record of a published file (definitions or event types): one JSON object."""
    return orjson.dumps({"version": version, "text": text, "published_at": published_at})


def decode_document(data: bytes, what: str, error: type[Exception]) -> tuple[str, str, int]:
    """(version, text, published_at) of a record from :func:`encode_document`; ``error``
    (naming ``what``) when it is not one."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise error(f"{what} record is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise error(f"{what} record must be a JSON object")
    version, text, at = obj.get("version"), obj.get("text"), obj.get("published_at")
    if not isinstance(version, str) or not isinstance(text, str) or not isinstance(at, int):
        raise error(f"{what} record needs version (string), text (string), published_at (int)")
    return version, text, at


@dataclass(frozen=True, slots=True)
class DefinitionsDoc:
    """One published definitions file."""

    version: str
    text: str
    published_at: int

    def encode(self) -> bytes:
        return encode_document(self.version, self.text, self.published_at)

    @classmethod
    def decode(cls, data: bytes) -> DefinitionsDoc:
        return cls(*decode_document(data, "definitions", DefinitionsDocError))

    @classmethod
    def of_text(cls, text: str, name: str | None = None, types: EventTypes | None = None
                ) -> tuple[DefinitionsDoc, Catalogue]:
        """Validate ``text`` (raises ``DefinitionError``; errors cite ``name``, the file) and
        wrap it in a document."""
        catalogue = load_definitions(text, name=name, types=types)
        return cls(catalogue.version, text, time.time_ns() // 1_000_000), catalogue

    def catalogue(self, types: EventTypes | None = None) -> Catalogue:
        return load_definitions(self.text, types=types)


@lru_cache(maxsize=4)
def file_types(path: str) -> EventTypes | None:
    """The custom event types of the types file ``path`` (``SEGSTREAM_TYPES_FILE``), None for
    an empty path; raises ``DefinitionError`` for a bad file."""
    return load_types(Path(path)) if path else None


def file_catalogue(path: str, types: EventTypes | None = None) -> Catalogue:
    """The definitions a worker starts with while none is published: the file ``path``
    (``SEGSTREAM_SEGMENTS_FILE``), else the packaged default catalogue; conditions may use
    the custom ``types``."""
    if path:
        return load_definitions(Path(path), types=types)
    return load_definitions(
        resources.files("processors").joinpath("catalogue.yaml").read_text("utf-8"),
        types=types)


def diff(old: Catalogue | None, new: Catalogue) -> dict[str, list[str]]:
    """Segments added, removed, changed (condition or enabled flag) and unchanged.

    >>> a = load_definitions('version: "1"\\nsegments: [{name: x, description: d, '
    ...                      'condition: "cart.items > 0"}]')
    >>> diff(None, a)["added"], diff(a, a)["unchanged"]
    (['x'], ['x'])
    """
    before = {} if old is None else {s.name: s for s in old.segments}
    after = {s.name: s for s in new.segments}
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
    for name in sorted(after.keys() | before.keys()):
        if name not in before:
            out["added"].append(name)
        elif name not in after:
            out["removed"].append(name)
        elif (before[name].condition_text, before[name].enabled) != (
                after[name].condition_text, after[name].enabled):
            out["changed"].append(name)
        else:
            out["unchanged"].append(name)
    return out
