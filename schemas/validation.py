"""Validation of raw events into the canonical form, with an error code for every rejection.

The typed models of :mod:`schemas.models` do the structural work (in C, via
:func:`msgspec.convert`); this module adds the rules a static schema cannot say, maps msgspec's
errors to :class:`ErrorCode`, and builds the canonical dict::

    {"event_id", "type", "customer_id", "anonymous_id", "timestamp" (int ms, UTC),
     "source", "schema_version", "properties"}

A raw Kafka record holds one event object or a JSON array of them. :func:`parse_record`
validates an array ``CHUNK`` events per ``convert`` call (the fast path: valid events are the
common case) and redoes a chunk event by event only when it holds a bad one, to say which and
why. Figures and the alternatives measured: bench/bench_validate.py.

>>> ev = validate_event({"event_id": "e1", "type": "page_view", "anonymous_id": "a1",
...     "timestamp": "2026-11-23T10:00:00+01:00", "properties": {"url": "/"}}, now_ms=NOW)
>>> ev["timestamp"], ev["source"], ev["customer_id"], routing_id(ev)
(1795424400000, 'unknown', None, 'a1')
>>> ok, bad = parse_record(b'[{"type": "nope"}, 3]', now_ms=NOW)
>>> ok, [(r.index, r.code.value, r.raw) for r in bad]
([], [(0, 'unknown_type', b'{"type": "nope"}'), (1, 'not_object', b'3')])
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Union

import msgspec
import orjson

from schemas.custommodels import build_models
from schemas.errors import ErrorCode, InvalidEvent
from schemas.eventtypes import EventTypes, timestamp_ms
from schemas.models import (
    EVENT_TYPES,
    RESERVED_NAMES,
    AnyEvent,
    Envelope,
    Traits,
    properties_class,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ErrorCode",
    "InvalidEvent",
    "Limits",
    "Rejected",
    "Schema",
    "parse_record",
    "routing_id",
    "validate_event",
]

Event = dict[str, Any]

NOW: Final = 1_795_478_400_000  # 2026-11-24T00:00:00Z, for the doctests


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that protect the pipeline; every one is documented in docs/events.md."""

    #: largest accepted event, in bytes of its JSON text (an array element's own bytes)
    max_event_bytes: int = 32_768
    #: largest accepted raw record (the broker's own limit is usually 1 MiB)
    max_record_bytes: int = 1_048_576
    #: most events one record's array may hold
    max_events_per_record: int = 1_000
    #: earliest accepted timestamp (2000-01-01T00:00:00Z); earlier is a bug (seconds sent as ms)
    min_timestamp_ms: int = 946_684_800_000
    #: how far ahead of the validator's clock a timestamp may be (device clock skew)
    max_future_ms: int = 600_000
    #: longest string (value or key) inside an extra property or an extra trait
    max_string_chars: int = 8_192
    #: deepest nesting of arrays/objects inside an extra property (a scalar is depth 0)
    max_depth: int = 8

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"Limits.{name} must be an integer >= 0, got {value!r}")


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Rejected:
    """One rejected event (``index`` in the record's array) or whole record (``index`` None).

    ``raw`` is the record's bytes for a single-object or whole-record rejection, and the
    element's original bytes (cut out of the record, unchanged) for an array element.
    """

    index: int | None
    code: ErrorCode
    message: str
    raw: bytes


def routing_id(event: Event) -> str:
    """The id that keys a customer's state and picks its partition: customer_id, else anonymous_id.

    >>> routing_id({"customer_id": None, "anonymous_id": "a"})
    'a'
    """
    rid = event["customer_id"] or event["anonymous_id"]
    assert rid is not None, "canonical events always carry a routing id"
    return rid  # type: ignore[no-any-return]


def partition_key(event: Event) -> str:
    """The id whose partition (``schemas.partitioner.partition_for``) a bundle event goes to:
    the routing id, except that an ``alias`` goes to its *anonymous* id's partition, where the
    anonymous profile lives (the worker there hands the profile to the customer's partition).

    >>> partition_key({"type": "alias", "customer_id": "c", "anonymous_id": "a"})
    'a'
    >>> partition_key({"type": "page_view", "customer_id": "c", "anonymous_id": "a"})
    'c'
    """
    if event["type"] == "alias":
        return event["anonymous_id"]  # type: ignore[no-any-return]
    return routing_id(event)


# --- msgspec error -> ErrorCode ----------------------------------------------------------

_FIELD_CODES: Final[dict[str, ErrorCode]] = {
    "event_id": ErrorCode.BAD_ID,
    "customer_id": ErrorCode.BAD_ID,
    "anonymous_id": ErrorCode.BAD_ID,
    "type": ErrorCode.UNKNOWN_TYPE,
    "timestamp": ErrorCode.BAD_TIMESTAMP,
    "properties": ErrorCode.BAD_PROPERTIES,
    "source": ErrorCode.BAD_ENVELOPE,
    "schema_version": ErrorCode.BAD_ENVELOPE,
}
_MISSING = "Object missing required field `"


def _classify_custom(schema: Schema, kind: str, head: str, path: str) -> InvalidEvent | None:
    """The ``bad_property`` error of a custom event's declared property, else None."""
    decl = schema.types.get(kind) if schema.types is not None else None
    if decl is None:
        return None
    if path == "$.properties" and head.startswith(_MISSING):
        name = head[len(_MISSING) : -1]
    elif path.startswith("$.properties."):
        name = path[len("$.properties."):].split(".", 1)[0].split("[", 1)[0]
    else:
        return None
    d = decl.properties.get(name)
    if d is None:
        return None
    what = "missing" if head.startswith(_MISSING) else head
    return InvalidEvent(ErrorCode.BAD_PROPERTY, f"property `{name}` of {kind}: expected "
                        f"{d.expected()}{'' if d.required else ' or null'} ({what}) at "
                        f"`$.properties.{name}`")


def _classify(err: msgspec.ValidationError, schema: Schema | None = None,
              kind: str = "") -> InvalidEvent:
    """Map a msgspec error about one event (paths relative to ``$``) to an error code."""
    msg = str(err)
    head, sep, path = msg.partition(" - at `")
    path = path[:-1] if sep else "$"
    if len(head) > 200:  # msgspec quotes the bad value: keep dead-letter messages short
        head = head[:200] + "..."
    if schema is not None and kind in schema.custom:
        custom = _classify_custom(schema, kind, head, path)
        if custom is not None:
            return custom
    if path == "$" and head.startswith(_MISSING):
        name = head[len(_MISSING) : -1]
        if name == "event_id":
            return InvalidEvent(ErrorCode.MISSING_ID, "missing required field `event_id`")
        if name == "type":
            return InvalidEvent(ErrorCode.UNKNOWN_TYPE, "missing required field `type`")
        code = _FIELD_CODES.get(name, ErrorCode.BAD_ENVELOPE)
        return InvalidEvent(code, f"missing required field `{name}`")
    top = path[2:].split(".", 1)[0].split("[", 1)[0]
    if top == "event_id" and head.endswith("got `null`"):
        return InvalidEvent(ErrorCode.MISSING_ID, "`event_id` is null")
    code = _FIELD_CODES.get(top, ErrorCode.BAD_ENVELOPE)
    if code is ErrorCode.UNKNOWN_TYPE:
        names = schema.names if schema is not None else tuple(EVENT_TYPES)
        return InvalidEvent(code, f"{head} at `{path}`; expected one of: {', '.join(names)}")
    return InvalidEvent(code, f"{head} at `{path}`")


# --- the rules a static schema cannot say ------------------------------------------------

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_JSON_TYPES: Final[dict[type, str]] = {
    dict: "object", list: "array", int: "integer", float: "number", bool: "boolean"}


def _short(value: object) -> str:
    """A scalar's repr (at most 64 characters); ``{...}`` / ``[...]`` for a container."""
    if type(value) is dict:
        return "{...}"
    if type(value) is list:
        return "[...]"
    return repr(value)[:64]
_SCALARS: Final = (str, int, float, bool, type(None))
_DECLARED: Final[dict[str, frozenset[str]]] = {
    name: frozenset(properties_class(cls).__struct_fields__) for name, cls in EVENT_TYPES.items()
}
_TRAIT_FIELDS: Final = frozenset(Traits.__struct_fields__)


def _datetime_ms(value: _dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (sub-millisecond digits are truncated)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000 + delta.microseconds // 1_000


def _check_extra(value: object, path: str, depth: int, limits: Limits) -> None:
    """Bound the strings and the nesting of one extra (undeclared) property value."""
    kind = type(value)
    if kind is str:
        if len(value) > limits.max_string_chars:  # type: ignore[arg-type]
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"string longer than {limits.max_string_chars} characters at `{path}`",
            )
    elif kind is dict or kind is list:
        if depth >= limits.max_depth:
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"nested deeper than {limits.max_depth} levels at `{path}`",
            )
        if kind is dict:
            for key, item in value.items():  # type: ignore[attr-defined]
                if len(key) > limits.max_string_chars:
                    raise InvalidEvent(
                        ErrorCode.BAD_PROPERTIES,
                        f"key longer than {limits.max_string_chars} characters at `{path}`",
                    )
                _check_extra(item, f"{path}.{key}", depth + 1, limits)
        else:
            for i, item in enumerate(value):  # type: ignore[arg-type]
                _check_extra(item, f"{path}[{i}]", depth + 1, limits)


def _check_undeclared(declared: frozenset[str], props: Event, limits: Limits) -> None:
    """Properties the model does not declare: no reserved name, bounded strings and nesting."""
    if not RESERVED_NAMES.isdisjoint(props):
        clash = sorted(RESERVED_NAMES.intersection(props))[0]
        raise InvalidEvent(
            ErrorCode.BAD_PROPERTIES,
            f"property name {clash!r} is reserved (an envelope field) at `$.properties.{clash}`",
        )
    for key in props.keys() - declared:
        if len(key) > limits.max_string_chars:
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"property name longer than {limits.max_string_chars} characters at "
                f"`$.properties.{key[:64]}...`",
            )
        _check_extra(props[key], f"$.properties.{key}", 0, limits)


def _check_traits(traits: dict[str, Any], limits: Limits) -> None:
    """Extra traits must be JSON scalars (strings bounded by ``max_string_chars``)."""
    for key, value in traits.items():
        if key in _TRAIT_FIELDS:
            continue
        if len(key) > limits.max_string_chars:
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"trait name longer than {limits.max_string_chars} characters at "
                f"`$.properties.traits.{key[:64]}...`",
            )
        if not isinstance(value, _SCALARS):
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"trait `{key}` must be a string, number, bool or null at "
                f"`$.properties.traits.{key}`",
            )
        if type(value) is str and len(value) > limits.max_string_chars:
            raise InvalidEvent(
                ErrorCode.BAD_PROPERTIES,
                f"string longer than {limits.max_string_chars} characters at "
                f"`$.properties.traits.{key}`",
            )


def _fix_cart_add(ev: Envelope, props: Event, limits: Limits) -> Event:
    if "quantity" not in props:
        props = {**props, "quantity": 1}
    return props


def _fix_purchase(ev: Envelope, props: Event, limits: Limits) -> Event:
    items = props.get("items")
    if items and not all("quantity" in item for item in items):
        items = [item if "quantity" in item else {**item, "quantity": 1} for item in items]
        props = {**props, "items": items}
    return props


def _fix_identify(ev: Envelope, props: Event, limits: Limits) -> Event:
    traits = props["traits"]
    if not traits.keys() <= _TRAIT_FIELDS:
        _check_traits(traits, limits)
    return props


def _fix_alias(ev: Envelope, props: Event, limits: Limits) -> Event:
    if ev.customer_id is None or ev.anonymous_id is None:
        raise InvalidEvent(
            ErrorCode.MISSING_ROUTING_ID, "alias needs both `customer_id` and `anonymous_id`"
        )
    if ev.customer_id == ev.anonymous_id:
        raise InvalidEvent(
            ErrorCode.BAD_ENVELOPE, "alias `customer_id` and `anonymous_id` must differ"
        )
    return props


_FIXES: Final[dict[str, Callable[[Envelope, Event, Limits], Event]]] = {
    "cart_add": _fix_cart_add,
    "purchase": _fix_purchase,
    "identify": _fix_identify,
    "alias": _fix_alias,
}


def _timestamp_fix(names: tuple[str, ...]) -> Callable[[Envelope, Event, Limits], Event]:
    """A custom type's timestamp properties in the canonical event: integer epoch ms."""
    def fix(ev: Envelope, props: Event, limits: Limits) -> Event:
        got = ev.properties  # type: ignore[attr-defined]
        out = dict(props)
        for name in names:
            value = getattr(got, name)
            if value is not None:
                out[name] = timestamp_ms(value)
        return out
    return fix


class Schema:
    """What validation accepts: the 13 built-in types, plus the custom types of a types file.

    The default (:data:`BUILTIN`) is the built-ins only; ``Schema(types)`` adds the declared
    custom types, converted in the same tagged union (one ``msgspec.convert`` per chunk).
    """

    def __init__(self, types: EventTypes | None = None) -> None:
        self.types = types
        custom = build_models(types) if types is not None else {}
        self.custom: frozenset[str] = frozenset(custom)
        self.classes: dict[str, type[Envelope]] = {**EVENT_TYPES, **custom}
        self.names: tuple[str, ...] = tuple(self.classes)
        self.declared: dict[str, frozenset[str]] = {
            **_DECLARED, **{n: frozenset(properties_class(c).__struct_fields__)
                            for n, c in custom.items()}}
        self.fixes = dict(_FIXES)
        for decl in types.types if types is not None else ():
            stamps = tuple(n for n, d in decl.properties.items() if d.kind == "timestamp")
            if stamps:
                self.fixes[decl.name] = _timestamp_fix(stamps)
        if custom:
            union: Any = Union[(*EVENT_TYPES.values(), *custom.values())]
            self.chunk: type[msgspec.Struct] = msgspec.defstruct(
                "_CustomChunk", [("events", list[union])],
                array_like=True, gc=False)
        else:
            self.chunk = _Chunk

    def unknown(self, got: str, kind: object) -> InvalidEvent:
        """The ``unknown_type`` error, naming the nearest declared type."""
        near = difflib.get_close_matches(kind, self.names, n=1, cutoff=0.6) \
            if type(kind) is str else []
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return InvalidEvent(ErrorCode.UNKNOWN_TYPE,
                            f"`type` is {got} at `$.type`{hint}; expected one of: "
                            f"{', '.join(self.names)}")


def _canonical(raw: Event, ev: Envelope, now_ms: int, limits: Limits,
               schema: Schema | None = None) -> Event:
    """The canonical dict of an event the models accepted, after the dynamic checks."""
    ts = ev.timestamp
    if type(ts) is not int:
        ts = _datetime_ms(ts)  # type: ignore[arg-type]
    if ts < limits.min_timestamp_ms or ts > now_ms + limits.max_future_ms:
        raise InvalidEvent(
            ErrorCode.ABSURD_TIMESTAMP,
            f"timestamp {ts} ms is before {limits.min_timestamp_ms} or more than "
            f"{limits.max_future_ms} ms after now ({now_ms})",
        )
    if ev.customer_id is None and ev.anonymous_id is None:
        raise InvalidEvent(
            ErrorCode.MISSING_ROUTING_ID, "one of `customer_id` or `anonymous_id` is required"
        )
    kind: str = raw["type"]
    sch = schema if schema is not None else BUILTIN
    props = raw.get("properties")
    if props is None:
        props = {}
    elif not props.keys() <= sch.declared[kind]:
        _check_undeclared(sch.declared[kind], props, limits)
    fix = sch.fixes.get(kind)
    if fix is not None:
        props = fix(ev, props, limits)
    return {
        "event_id": ev.event_id,
        "type": kind,
        "customer_id": ev.customer_id,
        "anonymous_id": ev.anonymous_id,
        "timestamp": ts,
        "source": ev.source,
        "schema_version": ev.schema_version,
        "properties": props,
    }


def _canonical_many(
    objs: list[Event], structs: Sequence[Envelope], now_ms: int, limits: Limits,
    schema: Schema,
) -> list[Event]:
    """:func:`_canonical` for a whole array the models accepted, in one tight loop.

    Same rules, checked with hoisted locals; on the first event that breaks one it raises
    ``LookupError`` or :class:`InvalidEvent` and the caller redoes the record event by event
    (which finds each exact error). ``test_schemas_consistency`` checks that both paths give
    the same verdicts.
    """
    lo = limits.min_timestamp_ms
    hi = now_ms + limits.max_future_ms
    declared_of = schema.declared
    fixes = schema.fixes
    out: list[Event] = []
    append = out.append
    for raw, ev in zip(objs, structs, strict=True):
        ts = ev.timestamp
        if type(ts) is not int:
            ts = _datetime_ms(ts)  # type: ignore[arg-type]
        cid = ev.customer_id
        aid = ev.anonymous_id
        if not lo <= ts <= hi or (cid is None and aid is None):
            raise LookupError
        kind: str = raw["type"]
        props = raw.get("properties")
        if props is None:
            props = {}
        elif not props.keys() <= declared_of[kind]:
            _check_undeclared(declared_of[kind], props, limits)
        if kind in fixes:
            props = fixes[kind](ev, props, limits)
        append(
            {
                "event_id": ev.event_id,
                "type": kind,
                "customer_id": cid,
                "anonymous_id": aid,
                "timestamp": ts,
                "source": ev.source,
                "schema_version": ev.schema_version,
                "properties": props,
            }
        )
    return out


def validate_event(obj: object, now_ms: int, limits: Limits = DEFAULT_LIMITS,
                   schema: Schema | None = None) -> Event:
    """Validate one decoded event; return its canonical dict or raise :class:`InvalidEvent`.

    ``now_ms`` is the validator's clock (epoch ms), used only for the future-timestamp bound.
    The input is never modified. Size limits are checked by :func:`parse_record` (this
    function sees an already decoded object). ``schema`` adds custom types (default: the
    built-in types only).
    """
    sch = schema if schema is not None else BUILTIN
    if type(obj) is not dict:
        raise InvalidEvent(
            ErrorCode.NOT_OBJECT, f"an event must be a JSON object, got {type(obj).__name__}"
        )
    kind = obj.get("type")
    cls = sch.classes.get(kind) if type(kind) is str else None
    if cls is None:
        # a str is quoted (64 characters at most); anything else is named by its JSON type:
        # repr() of a value nested ~1000 deep raises RecursionError (and a big one is slow)
        got = ("missing" if kind is None else repr(kind[:64]) if type(kind) is str
               else f"{_JSON_TYPES.get(type(kind), type(kind).__name__)} {_short(kind)}")
        raise sch.unknown(got, kind)
    try:
        ev = msgspec.convert(obj, cls)
    except msgspec.ValidationError as err:
        raise _classify(err, sch, kind) from None  # type: ignore[arg-type]
    return _canonical(obj, ev, now_ms, limits, sch)


# --- whole records -------------------------------------------------------------------------

class _Chunk(msgspec.Struct, array_like=True, gc=False):
    """Wrapper that lets msgspec cache the type of an event array.

    ``msgspec.convert(x, list[AnyEvent])`` rebuilds its view of the 13-way union on every call
    (~10 µs, measured); a Struct caches it on the class, so converting ``(events,)`` to this
    costs ~0.5 µs per call.
    """

    events: list[AnyEvent]

_RAW_LIST: Final = msgspec.json.Decoder(list[msgspec.Raw])
#: a JSON string, or one structural character (what :func:`_split_array` needs to see)
_TOKENS: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
_JSON_WS: Final = b" \t\n\r"


def _split_array(value: bytes) -> list[bytes]:
    """The original bytes of each element of a JSON array that orjson accepted, without
    recursion: msgspec's :data:`_RAW_LIST` gives up (``RecursionError``) on an element nested
    about 1000 deep, which orjson still accepts (its limit is 1024).

    >>> _split_array(b'[ {"a": [1, "],"]} , [[2]],3 ]')
    [b'{"a": [1, "],"]}', b'[[2]]', b'3']
    """
    out: list[bytes] = []
    depth = 0
    start = 0
    for m in _TOKENS.finditer(value):
        c = value[m.start()]
        if c in b"[{":
            depth += 1
            if depth == 1:
                start = m.end()
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                out.append(value[start : m.start()].strip(_JSON_WS))
                break
        elif c == 0x2C and depth == 1:  # a comma between two elements
            out.append(value[start : m.start()].strip(_JSON_WS))
            start = m.end()
    return out


def _raw_elements(value: bytes) -> Sequence[bytes | msgspec.Raw]:
    """The original bytes of each element of an array record (see :func:`_split_array`)."""
    try:
        return _RAW_LIST.decode(value)
    except RecursionError:
        return _split_array(value)


def _whole(code: ErrorCode, message: str, raw: bytes) -> tuple[list[Event], list[Rejected]]:
    return [], [Rejected(None, code, message, raw)]


def parse_record(
    value: bytes | None, now_ms: int, limits: Limits = DEFAULT_LIMITS,
    schema: Schema | None = None,
) -> tuple[list[Event], list[Rejected]]:
    """Validate one raw record: one event object, or a JSON array of events.

    Returns the canonical valid events in record order and one :class:`Rejected` per bad
    event (or one for the whole record when it is unparsable, too big, not an object/array,
    or holds too many events). An empty array gives ``([], [])``. ``schema`` adds custom
    event types (default: the built-in types only).
    """
    if value is None:
        return _whole(ErrorCode.UNPARSABLE, "the record has no value (null)", b"")
    size = len(value)
    if size > limits.max_record_bytes:
        return _whole(
            ErrorCode.OVERSIZED,
            f"record of {size} bytes exceeds max_record_bytes={limits.max_record_bytes}",
            value,
        )
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        return _whole(ErrorCode.UNPARSABLE, f"not valid JSON: {err}", value)
    if type(obj) is dict:
        if size > limits.max_event_bytes:
            return _whole(
                ErrorCode.OVERSIZED,
                f"event of {size} bytes exceeds max_event_bytes={limits.max_event_bytes}",
                value,
            )
        try:
            return [validate_event(obj, now_ms, limits, schema)], []
        except InvalidEvent as exc:
            return _whole(exc.code, exc.message, value)
    if type(obj) is not list:
        return _whole(
            ErrorCode.NOT_OBJECT,
            f"a record must be a JSON object or array, got {type(obj).__name__}",
            value,
        )
    if not obj:
        return [], []
    if len(obj) > limits.max_events_per_record:
        return _whole(
            ErrorCode.TOO_MANY_EVENTS,
            f"{len(obj)} events exceed max_events_per_record={limits.max_events_per_record}",
            value,
        )
    return _parse_array(value, obj, now_ms, limits, schema if schema is not None else BUILTIN)


#: events validated per ``msgspec.convert`` call in an array record. Each call costs ~2 µs of
#: fixed overhead, and a chunk holding a bad event is redone event by event (to say which and
#: why), so the size trades the all-valid case against the some-invalid one. Measured with
#: bench/bench_validate.py (µs/event, arrays of 500, all valid / 1% invalid): 8: 3.33 / 3.58,
#: 32: 3.36 / 3.81, 500: 3.03 / 4.42 (noise about ±0.3); 16 is the middle of the flat part.
CHUNK: Final = 16


class _Elements:
    """Original bytes of a record's array elements, split out only when first needed."""

    __slots__ = ("_raws", "_value")

    def __init__(self, value: bytes, raws: Sequence[bytes | msgspec.Raw] | None) -> None:
        self._value = value
        self._raws = raws

    def sizes_ok(self, start: int, stop: int, max_bytes: int) -> bool:
        raws = self._raws
        return raws is None or all(len(r) <= max_bytes for r in raws[start:stop])

    def raw(self, index: int, element: object) -> bytes:
        if self._raws is None:
            try:
                self._raws = _raw_elements(self._value)
            except msgspec.DecodeError:  # pragma: no cover - orjson accepted the record
                return orjson.dumps(element)
        return bytes(self._raws[index])


def _parse_array(
    value: bytes, obj: list[Any], now_ms: int, limits: Limits, schema: Schema
) -> tuple[list[Event], list[Rejected]]:
    """Validate a non-empty array record chunk by chunk: fast when a chunk is all valid."""
    max_bytes = limits.max_event_bytes
    # Element sizes matter only when the whole record could hold an oversized element.
    elements = _Elements(value, _raw_elements(value) if len(value) > max_bytes else None)
    good: list[Event] = []
    bad: list[Rejected] = []
    chunk_cls = schema.chunk
    for start in range(0, len(obj), CHUNK):
        chunk = obj[start : start + CHUNK]
        if elements.sizes_ok(start, start + CHUNK, max_bytes):
            try:
                structs = msgspec.convert((chunk,), chunk_cls).events  # type: ignore[attr-defined]
                good.extend(_canonical_many(chunk, structs, now_ms, limits, schema))
                continue
            except (msgspec.ValidationError, LookupError, InvalidEvent):
                pass
        for i, element in enumerate(chunk, start):
            try:
                if not elements.sizes_ok(i, i + 1, max_bytes):
                    raise InvalidEvent(
                        ErrorCode.OVERSIZED,
                        f"event of {len(elements.raw(i, element))} bytes exceeds "
                        f"max_event_bytes={max_bytes}",
                    )
                good.append(validate_event(element, now_ms, limits, schema))
            except InvalidEvent as exc:
                bad.append(Rejected(i, exc.code, exc.message, elements.raw(i, element)))
    return good, bad


#: the built-in event types only (what validation accepts without a types file)
BUILTIN: Final = Schema()
