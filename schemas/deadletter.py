"""Dead-letter records: a rejected event (or raw record) with its reason and where it came from.

Wire format (UTF-8 JSON)::

    {"v": 1, "code": "bad_timestamp", "message": "...", "source_topic": "events.raw",
     "partition": 3, "offset": 1234, "index": 0, "received_at": 1795424400000,
     "raw_encoding": "utf-8", "raw": "<the original bytes>"}

``raw`` keeps the original bytes exactly: as text when they are valid UTF-8
(``raw_encoding`` "utf-8"), else base64 (``raw_encoding`` "base64"). ``index`` is the
element's position in the record's JSON array, or null for a single object or a whole-record
rejection.

>>> data = encode_dead_letter(ErrorCode.UNPARSABLE, "not JSON", b"\\xff{", "raw", 0, 7, None, 1)
>>> letter = decode_dead_letter(data)
>>> letter.raw, letter.code, orjson.loads(data)["raw_encoding"]
(b'\\xff{', 'unparsable', 'base64')
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

import orjson

from schemas.errors import ErrorCode

DEAD_LETTER_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A decoded dead-letter record (``raw`` back to the original bytes)."""

    code: str
    message: str
    raw: bytes
    source_topic: str
    partition: int
    offset: int
    index: int | None
    received_at_ms: int


def encode_dead_letter(  # noqa: PLR0917 - positional signature agreed with the callers
    code: ErrorCode,
    message: str,
    raw: bytes,
    source_topic: str,
    partition: int,
    offset: int,
    index: int | None,
    received_at_ms: int,
) -> bytes:
    """Encode one dead letter; every ``code`` is an :class:`~schemas.errors.ErrorCode`."""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return orjson.dumps(
        {
            "v": DEAD_LETTER_VERSION,
            "code": str(code),
            "message": message,
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "index": index,
            "received_at": received_at_ms,
            "raw_encoding": encoding,
            "raw": text,
        }
    )


def decode_dead_letter(data: bytes) -> DeadLetter:
    """Decode a dead letter (tests, tooling); raise ValueError if malformed."""
    obj: dict[str, Any] = orjson.loads(data)
    if obj.get("v") != DEAD_LETTER_VERSION:
        raise ValueError(f"unknown dead-letter version {obj.get('v')!r}")
    encoding = obj["raw_encoding"]
    if encoding == "utf-8":
        raw = obj["raw"].encode("utf-8")
    elif encoding == "base64":
        raw = base64.b64decode(obj["raw"], validate=True)
    else:
        raise ValueError(f"unknown raw_encoding {encoding!r}")
    return DeadLetter(
        code=obj["code"],
        message=obj["message"],
        raw=raw,
        source_topic=obj["source_topic"],
        partition=obj["partition"],
        offset=obj["offset"],
        index=obj["index"],
        received_at_ms=obj["received_at"],
    )
