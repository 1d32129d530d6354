"""Hostile inputs for the ingest path and the collector: a seeded generator and hypothesis
strategies, shared by tests/unit/test_fuzz_validation.py and tests/integration/test_fuzz.py.

:class:`HostileGenerator` makes raw records (bytes, as produced to the raw topic or POSTed to
the collector) of every class the issue lists — bad UTF-8, not JSON, JSON that is not an
object/array, deep nesting, huge strings and records, NaN/Infinity/1e400, timestamps far in the
past or future or of the wrong type, unknown types, type confusion, duplicate ids and duplicate
JSON keys, property names that collide with internal names, empty and whitespace records, mixed
arrays, arrays over the length limit — each with the outcome the validation must give: which
elements are rejected with which code, and which valid events it holds. Valid-but-hostile events
(odd keys, odd ids, extreme numbers, edge timestamps) are "valid" and must reach the engine.
Deterministic for a seed and a ``now_ms``, so an integration test makes 10k+ of them cheaply.

The hypothesis strategies (:func:`json_values`, :func:`mutated_events`, :func:`hostile_bytes`)
drive the unit properties; :func:`generated_cases` turns the generator into a strategy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
from hypothesis import strategies as st

from schemas.models import EVENT_TYPES, RESERVED_NAMES, Traits, properties_class
from schemas.validation import DEFAULT_LIMITS, Limits

Event = dict[str, Any]

#: expected code for "rejected, with whatever code" (used where the code is not the point)
ANY_CODE: Final = "*"

#: envelope fields of an event, the fields of the internal records (bundle, hand-off, dead
#: letter, segment change) and names with a meaning in other languages or stores
INTERNAL_NAMES: Final = (
    "v", "kind", "events", "event", "state", "handoff", "code", "message", "raw",
    "raw_encoding", "index", "offset", "partition", "source_topic", "received_at", "segment",
    "action", "version", "cause", "definition_version", "at", "items", "traits", "quantity",
    "__proto__", "constructor", "prototype", "__class__", "__dict__", "$type", "$ref", "$id",
    "_seg", "_id", "_type", "", " ", "\u0000", "\u0001", "\x1f", "\x7f", "\u0085", "\u2028",
    "\u202e", "\ufeff", "\U0001f600", "a.b", "a[0]", "$.properties", "{p0}", "{p1}:c:x",
    "c:x", "*", "../..", "%s", "\\", '"',
)  # fmt: skip

#: ids that are valid (1..128 characters, no control characters) but odd
ODD_IDS: Final = (
    "{p0}", "{p3}:c:victim", "c:1", "*", "?", " ", "../../etc/passwd", "%00", "\u202eevil",
    "\U0001f600" * 128, "x" * 128, "ü", "\\", '"', "null", "undefined", "__proto__", "$type",
    "\ufeffbom", "\u2028", "0", "-1", "e-1", "1e400",
)  # fmt: skip

#: property names each type declares (an odd value there would be invalid)
DECLARED: Final = {name: frozenset(properties_class(cls).__struct_fields__)
                   for name, cls in EVENT_TYPES.items()}
DECLARED_TRAITS: Final = frozenset(Traits.__struct_fields__)

TYPES: Final = ("page_view", "cart_add", "cart_remove", "checkout", "purchase", "email_sent",
                "email_open", "email_click", "email_unsubscribe", "email_bounce", "identify")


@dataclass(frozen=True, slots=True)
class Expected:
    """One rejection parse_record must report: array ``index`` (None: the whole record or a
    single object) and the ErrorCode value (or :data:`ANY_CODE`)."""

    index: int | None
    code: str
    raw: bytes | None = None  # an element's original bytes (None: the whole record's)


@dataclass(frozen=True, slots=True)
class Case:
    """One raw record and its expected outcome.

    ``value`` None is a Kafka record without a value. ``valid`` holds the decoded valid events
    it contains, in order (what their canonical forms are made from); ``rejected`` the expected
    rejections in parse_record's order (a whole-record one alone).
    """

    cls: str
    value: bytes | None
    rejected: tuple[Expected, ...]
    valid: tuple[Event, ...]

    @property
    def whole(self) -> Expected | None:
        """The whole-record (or single-object) rejection, if that is the outcome."""
        if len(self.rejected) == 1 and self.rejected[0].index is None:
            return self.rejected[0]
        return None



def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _deep_list(depth: int) -> orjson.Fragment:
    """``depth`` nested arrays as JSON text (orjson itself writes at most 254 levels)."""
    return orjson.Fragment(b"[" * depth + b"0" + b"]" * depth)


#: integers beyond 64 bits (orjson reads them as floats and cannot write them)
_HUGE_INT: Final = orjson.Fragment(b"1" + b"0" * 30)
_HUGE_NEG_INT: Final = orjson.Fragment(b"-1" + b"0" * 30)


class HostileGenerator:
    """Seeded generator of hostile raw records with their expected outcomes.

    ``now_ms`` is the validator's clock the expectations assume; valid timestamps stay within
    ``max_age_ms`` before it and invalid future ones a day after it, so a validator whose clock
    is minutes off still agrees. ``prefix`` starts every event id (tests filter on it).
    """

    def __init__(self, seed: int, now_ms: int, limits: Limits = DEFAULT_LIMITS,
                 prefix: str = "fz-", customers: int = 200, max_age_ms: int = 3_600_000
                 ) -> None:
        self.rng = random.Random(seed)
        self.now = now_ms
        self.max_age = max_age_ms
        self.limits = limits
        self.prefix = prefix
        self.customers = [f"{prefix}c{i}" for i in range(customers)]
        self.anonymous = [f"{prefix}a{i}" for i in range(customers // 4)]
        self.n = 0
        self.issued: list[Event] = []  # valid events made so far (duplicate ids pick from here)
        self.odd_ids: set[str] = set()  # ids of the valid-but-hostile events
        self.classes: dict[str, Callable[[], Case]] = {
            "bad_utf8": self.bad_utf8, "not_json": self.not_json,
            "empty": self.empty, "json_scalar": self.json_scalar,
            "nan_inf": self.nan_inf, "deep_nesting": self.deep_nesting,
            "huge_string": self.huge_string, "oversized_record": self.oversized_record,
            "too_many_events": self.too_many_events, "bad_element": self.bad_single,
            "mixed_array": self.mixed_array, "duplicate_keys": self.duplicate_keys,
            "duplicate_id": self.duplicate_id, "odd_valid": self.odd_valid_record,
            "odd_array": self.odd_array,
        }

    # --- valid events ------------------------------------------------------------------------
    def _id(self, tag: str = "e") -> str:
        self.n += 1
        return f"{self.prefix}{tag}{self.n}"

    def _ts(self) -> int | str:
        ts = self.now - self.rng.randrange(1_000, self.max_age)
        if self.rng.random() < 0.2:
            return _rfc3339(ts, self.rng)
        return ts

    def _props(self, kind: str) -> Event:
        r, n = self.rng, self.n
        return {
            "page_view": lambda: {"url": f"/p/{n % 13}", "category": r.choice(["shoes", "hats"]),
                                  "price": r.choice([9.5, 120, 0])},
            "cart_add": lambda: {"product_id": f"sku-{n % 7}", "price": 9.5,
                                 "quantity": r.randrange(1, 4)},
            "cart_remove": lambda: {"product_id": f"sku-{n % 7}"},
            "checkout": lambda: {"cart_value": 12.0, "step": "payment"},
            "purchase": lambda: {"order_id": f"o{n}", "amount": 59.9, "currency": "EUR",
                                 "items": [{"product_id": f"sku-{n % 7}", "price": 59.9}]},
            "email_sent": lambda: {"campaign_id": "spring"},
            "email_open": lambda: {"campaign_id": "spring", "email_id": f"m{n}"},
            "email_click": lambda: {"campaign_id": "spring", "url": "https://shop.example/x"},
            "email_unsubscribe": lambda: {"list_id": "news"},
            "email_bounce": lambda: {"kind": r.choice(["hard", "soft"])},
            "identify": lambda: {"traits": {"country": r.choice(["FR", "DE"]),
                                            "email": f"u{n}@example.com", "tier": "gold"}},
        }[kind]()

    def valid_event(self, tag: str = "ok") -> Event:
        """A plain valid event of a known customer or visitor (recorded for duplicates)."""
        kind = self.rng.choice(TYPES)
        ev: Event = {"event_id": self._id(tag), "type": kind, "timestamp": self._ts(),
                     "source": "fuzz", "properties": self._props(kind)}
        if self.rng.random() < 0.8:
            ev["customer_id"] = self.rng.choice(self.customers)
        else:
            ev["anonymous_id"] = self.rng.choice(self.anonymous)
        self.issued.append(ev)
        return ev

    def valid_record(self, events: int = 1) -> Case:
        """A record of plain valid events (one object when ``events`` is 1)."""
        evs = [self.valid_event() for _ in range(events)]
        value = _dumps(evs[0] if events == 1 and self.rng.random() < 0.5 else evs)
        return Case("valid", value, (), tuple(evs))

    def odd_valid(self) -> Event:
        """A valid event that is hostile all the same: odd property names (internal names,
        control characters, 8192-character keys), extreme numbers, odd ids, odd extra envelope
        fields, edge timestamps."""
        r = self.rng
        ev = self.valid_event("odd")
        props = ev["properties"]
        target = props["traits"] if ev["type"] == "identify" else props
        declared = DECLARED_TRAITS if ev["type"] == "identify" else DECLARED[ev["type"]]
        added: list[str] = []
        for _ in range(r.randrange(1, 4)):
            key = r.choice(INTERNAL_NAMES)
            if key in RESERVED_NAMES or key in target or key in declared:
                continue
            if ev["type"] == "identify":
                target[key] = r.choice(_ODD_SCALARS)  # an extra trait is a scalar
            else:
                target[key] = r.choice(_ODD_VALUES)()
            added.append(key)
        if ev["type"] != "identify" and r.random() < 0.1:
            key = "k" * self.limits.max_string_chars
            props[key] = "v" * self.limits.max_string_chars
            added.append(key)
        choice = r.random()
        if choice < 0.1:
            head = f"{self.prefix}odd{self.n}-"
            ev["event_id"] = head + r.choice(ODD_IDS)[: 128 - len(head)]
        elif choice < 0.2 and "customer_id" in ev:  # the routing id: Redis keys, partitions
            ev["customer_id"] = (self.prefix + r.choice(ODD_IDS))[:128]
        elif choice < 0.3:  # extra envelope fields are dropped, whatever their names
            ev.update({r.choice(("v", "kind", "events", "state", "__proto__", "$type", "_seg",
                                 "context", "Type", "EVENT_ID")): r.choice(_ODD_VALUES)()})
        elif choice < 0.4:  # odd but valid timestamp spellings
            ts = self.now - r.randrange(1_000, self.max_age)
            ev["timestamp"] = r.choice([
                _rfc3339(ts, r).replace("T", "t").replace("Z", "z"),
                _rfc3339(ts, r).replace("T", " "),
                _rfc3339(ts, r, offset="+14:00"), _rfc3339(ts, r, offset="-12:00"),
                _rfc3339(ts, r, fraction=".999999999"),
                self.now + r.randrange(0, 60_000),  # a little ahead: device clock skew
            ])
        elif choice < 0.45:  # the oldest accepted instant (the worker then finds it too late)
            ev["timestamp"] = self.limits.min_timestamp_ms
        while added and len(_dumps(ev)) > self.limits.max_event_bytes:  # keep it valid
            target.pop(added.pop())
        self.odd_ids.add(ev["event_id"])
        return ev

    # --- invalid events: one mutation each, with its code -------------------------------------
    def bad_event(self) -> tuple[Any, str]:
        """An array element or single event with exactly one problem, and its code."""
        r = self.rng
        base = self.valid_event("bad")
        self.issued.pop()  # not a valid event after all
        mutate = r.choice(self._mutations)
        return mutate(self, base, r)

    def _m_type(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        bad = r.choice(["teleport", "", "PAGE_VIEW", " page_view", "page_view\u0000",
                        "page_view ", "pageview", 42, None, True, 1.5, ["page_view"],
                        {"type": "page_view"}, "x" * 1000, [[[["deep"]]]] * 3, _MISSING,
                        _HUGE_INT, _deep_list(300)])
        return _set(ev, "type", bad), "unknown_type"

    def _m_missing_id(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        return _set(ev, "event_id", r.choice([None, _MISSING])), "missing_id"

    def _m_bad_id(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        field = r.choice(["event_id", "customer_id", "anonymous_id"])
        bad = r.choice([42, 4.2, True, False, [], ["x"], {}, {"id": "x"}, "", "x" * 129,
                        "a\u0000b", "a\n", "\x7f", "\u0085x", "x\n", "\t", "\u009f",
                        18446744073709551615, -1, "\U0001f600" * 129])
        return _set(ev, field, bad), "bad_id"

    def _m_bad_timestamp(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        bad = r.choice([float(self.now), self.now + 0.5, 1.7e12, True, False, None, _MISSING,
                        "yesterday", "", "2026-11-23", "2026-11-23T10:00:00",
                        "2026-11-23T10:00:60Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                        "10000-01-01T00:00:00Z", "2026-W48-1", str(self.now), [self.now],
                        {"ms": self.now}, _HUGE_INT, _HUGE_NEG_INT, "\u0000",
                        "2026-11-23T10:00:00ZZ"])
        return _set(ev, "timestamp", bad), "bad_timestamp"

    def _m_absurd_timestamp(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        lo = self.limits.min_timestamp_ms
        bad = r.choice([0, -1, 1000, 1_795_428_000, -(10**18), lo - 1,
                        self.now + 86_400_000, 2**63 - 1, 18446744073709551615,
                        -(2**63), "1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z",
                        "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                        _rfc3339(self.now + 86_400_000, r)])
        return _set(ev, "timestamp", bad), "absurd_timestamp"

    def _m_properties(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        kind = ev["type"]
        props = ev["properties"]
        m = self.limits.max_string_chars
        generic: list[Callable[[], Any]] = [
            lambda: "a string", lambda: [1, 2], lambda: 5, lambda: True,
            lambda: {**props, r.choice(sorted(RESERVED_NAMES)): "x"},
        ]
        if kind == "identify":
            generic += [
                lambda: {"traits": [1]}, lambda: {"traits": "gold"}, lambda: {},
                lambda: {"traits": {"x": {"a": 1}}}, lambda: {"traits": {"x": [1]}},
                lambda: {"traits": {"email": 5}}, lambda: {"traits": {"country": "fr"}},
                lambda: {"traits": {"birthday": "2026-02-30"}},
                lambda: {"traits": {"satisfaction": 11}},
                lambda: {"traits": {"satisfaction": True}},
                lambda: {"traits": {"tier": "g" * (m + 1)}},
            ]
        else:
            generic += [
                lambda: {**props, "blob": "x" * (m + 1)},
                lambda: {**props, "k" * (m + 1): 1},
                lambda: {**props, "deep": _nested_list(self.limits.max_depth + 1)},
                lambda: {**props, "deep": _nested_dict(self.limits.max_depth + 1)},
                lambda: {**props, "deep": _deep_list(r.choice([50, 500, 1000]))},
                lambda: {**props, "wide": [{"a": [{"b": [{"c": [{"d": [0]}]}]}]}]},
            ]
        specific: dict[str, list[Callable[[], Any]]] = {
            "page_view": [lambda: {}, lambda: {"url": 5}, lambda: {"url": "u" * 8193},
                          lambda: {"url": "/", "price": True}, lambda: {"url": "/", "price": -1},
                          lambda: {"url": "/", "price": "9.5"}, lambda: {"url": None}],
            "cart_add": [lambda: {"product_id": "p", "price": 1, "quantity": 0},
                         lambda: {"product_id": "p", "price": 1, "quantity": 2.5},
                         lambda: {"product_id": "p", "price": 1, "quantity": "2"},
                         lambda: {"product_id": "p", "price": 1, "quantity": True},
                         lambda: {"product_id": "p", "price": 1, "quantity": None},
                         lambda: {"product_id": 5, "price": 1}, lambda: {"price": 1},
                         lambda: {"product_id": "p", "price": False}],
            "purchase": [lambda: {"order_id": "o", "amount": 1, "currency": "eur"},
                         lambda: {"order_id": "o", "amount": 1, "currency": "EURO"},
                         lambda: {"order_id": "o", "amount": None, "currency": "EUR"},
                         lambda: {"order_id": "o", "amount": 1, "currency": "EUR\n"},
                         lambda: {"order_id": "o", "amount": 1, "currency": "EUR", "items": [1]},
                         lambda: {"order_id": "o", "amount": 1, "currency": "EUR",
                                  "items": [{"quantity": 1}]},
                         lambda: {"order_id": "o", "amount": 1, "currency": "EUR",
                                  "items": {"product_id": "p"}}],
            "email_bounce": [lambda: {"kind": "medium"}, lambda: {"kind": 1}],
        }
        options = generic + specific.get(kind, [])
        return _set(ev, "properties", r.choice(options)()), "bad_properties"

    def _m_routing(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        out = _set(_set(ev, "customer_id", r.choice([None, _MISSING])), "anonymous_id",
                   r.choice([None, _MISSING]))
        if r.random() < 0.3:  # an alias needs both ids
            out = {**out, "type": "alias", "properties": {}, "customer_id": "c-x"}
        return out, "missing_routing_id"

    def _m_envelope(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        choice = r.random()
        if choice < 0.4:
            return _set(ev, "source", r.choice([42, "", "s" * 129, None, [], True])), \
                "bad_envelope"
        if choice < 0.8:
            return _set(ev, "schema_version", r.choice([2, 0, "1", True, None, 1.0, [1]])), \
                "bad_envelope"
        same = r.choice(self.customers)
        return {**ev, "type": "alias", "customer_id": same, "anonymous_id": same,
                "properties": {}}, "bad_envelope"

    def _m_not_object(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        return r.choice([42, "event", None, True, 1.5, [], [ev], [[[]]], -0, _HUGE_INT,
                         18446744073709551615, _deep_list(r.choice([100, 1000, 1015]))]), \
            "not_object"

    def _m_oversized(self, ev: Event, r: random.Random) -> tuple[Any, str]:
        pad = self.limits.max_event_bytes + r.randrange(1, 2000)
        if r.random() < 0.3:
            return _set(ev, "context", "x" * pad), "oversized"  # dropped field: still too big
        return _set(ev, "properties", {**ev["properties"], "pad": "x" * pad}), "oversized"

    _mutations: Final = (_m_type, _m_missing_id, _m_bad_id, _m_bad_timestamp,
                         _m_absurd_timestamp, _m_properties, _m_properties, _m_routing,
                         _m_envelope, _m_not_object, _m_oversized)

    # --- record classes ----------------------------------------------------------------------
    def bad_utf8(self) -> Case:
        r = self.rng
        good = _dumps(self.valid_event("u8"))
        self.issued.pop()
        junk = r.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf",
                         b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xf4\x90\x80\x80"])
        if r.random() < 0.2:
            value = bytes(r.randrange(128, 256) for _ in range(r.randrange(1, 64)))
        else:  # inside a string value, where a lax decoder would let it through
            at = good.index(b'"', good.index(b'"event_id"') + 11) + 1
            value = good[:at] + junk + good[at:]
            if r.random() < 0.3:
                value = b"[" + value + b"]"
        return Case("bad_utf8", value, (Expected(None, "unparsable"),), ())

    def not_json(self) -> Case:
        r = self.rng
        good = _dumps(self.valid_event("nj"))
        self.issued.pop()
        value = r.choice([
            good[: r.randrange(1, len(good))],  # truncated
            good + b"x", good + good, good + b",", b"[" + good, good[:-1] + b",}",
            good.replace(b'"', b"'"), b"/* c */" + good, good.replace(b":", b" ", 1),
            b"{event_id: 1}", b"[0x10]", b"[01]", b"[+1]", b"[.5]", b"[1.]", b"\x00",
            b"\xef\xbb\xbf" + good, b'["\\ud800"]', b'{"a": "\\x41"}', b"[1, 2,]",
            b'{"a" 1}', b"[undefined]", b"[True]", b'"unterminated', b"}", b"]",
            good.replace(b'"', b"\\u0022", 1), b'{"a":"\n"}',
        ])
        return Case("not_json", value, (Expected(None, "unparsable"),), ())

    def empty(self) -> Case:
        value = self.rng.choice([b"", b" ", b"\n", b"\r\n\t ", b" " * 10_000])
        return Case("empty", value, (Expected(None, "unparsable"),), ())

    def json_scalar(self) -> Case:
        value = self.rng.choice([b"null", b"true", b"false", b"42", b"-0", b"1.5", b'"event"',
                                 b'""', b"18446744073709551616", b"1e308", b" 7 "])
        return Case("json_scalar", value, (Expected(None, "not_object"),), ())

    def nan_inf(self) -> Case:
        r = self.rng
        ev = self.valid_event("nan")
        self.issued.pop()
        literal = r.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan",
                            b"inf", b"-inf", b"1e99999"])
        field = r.choice([b"timestamp", b"amount"])
        if field == b"amount":
            ev = {**ev, "properties": {**ev["properties"], "amount": 0}}
        raw = _dumps(ev)
        start = raw.index(b'"' + field + b'":') + len(field) + 3
        end = start
        while raw[end:end + 1] not in (b",", b"}"):
            end += 1
        value = raw[:start] + literal + raw[end:]
        if r.random() < 0.3:
            value = b"[" + _dumps(self.valid_event()) + b"," + value + b"]"
            self.issued.pop()  # the whole record is unparsable: nothing of it is valid
        return Case("nan_inf", value, (Expected(None, "unparsable"),), ())

    def deep_nesting(self) -> Case:
        r = self.rng
        depth = r.choice([1_025, 2_000, 10_000, 100_000])
        choice = r.random()
        if choice < 0.3:  # deeper than any JSON parser here accepts
            value = (b"[" * depth + b"]" * depth) if r.random() < 0.5 else (
                b'{"a":' * depth + b"1" + b"}" * depth)
            code = "oversized" if len(value) > self.limits.max_record_bytes else "unparsable"
            return Case("deep_nesting", value, (Expected(None, code),), ())
        if choice < 0.4:  # unbalanced
            code = "oversized" if depth > self.limits.max_record_bytes else "unparsable"
            return Case("deep_nesting", b"[" * depth, (Expected(None, code),), ())
        # nested just under the JSON parser's limit (1024): an array element, maybe in a
        # record bigger than max_event_bytes, or an event's `type`
        d = r.choice([200, 990, 1000, 1010, 1020])
        ev = self.valid_event()
        if choice < 0.6:
            value = b'{"type":' + b"[" * d + b"]" * d + b"}"
            self.issued.pop()
            return Case("deep_nesting", value, (Expected(None, "unknown_type"),), ())
        nested = b"[" * d + b"]" * d
        pad = self.limits.max_event_bytes if r.random() < 0.5 else 0
        if pad:
            ev["properties"] = {**ev["properties"], "pad": "p" * (pad // 2)}
        value = b"[" + _dumps(ev) + b"," + nested + b"]"
        return Case("deep_nesting", value, (Expected(1, "not_object", nested),), (ev,))

    def huge_string(self) -> Case:
        r = self.rng
        big = r.choice([self.limits.max_event_bytes + 1, self.limits.max_event_bytes * 2,
                        self.limits.max_record_bytes // 2])
        ev = self.valid_event("big")
        self.issued.pop()
        where = r.choice(["event_id", "url", "extra", "key", "context"])
        if where == "event_id":
            ev["event_id"] = "i" * big
        elif where == "key":
            ev["properties"] = {**ev["properties"], "k" * big: 1}
        elif where == "context":
            ev["context"] = {"ua": "u" * big}
        else:
            ev["properties"] = {**ev["properties"], "blob": "\u00e9" * (big // 2)}
        value = _dumps(ev)
        if len(value) > self.limits.max_record_bytes:
            return Case("huge_string", value, (Expected(None, "oversized"),), ())
        if r.random() < 0.5 and len(value) < self.limits.max_record_bytes - 2_000:
            other = self.valid_event()  # an element: the record keeps its other events
            return Case("huge_string", b"[" + _dumps(other) + b"," + value + b"]",
                        (Expected(1, "oversized", value),), (other,))
        return Case("huge_string", value, (Expected(None, "oversized"),), ())

    def oversized_record(self) -> Case:
        r = self.rng
        evs = []
        size = 1  # "[" + each event and its "," or "]": the record's exact length
        while size <= self.limits.max_record_bytes:
            ev = self.valid_event("ov")
            self.issued.pop()
            ev["properties"] = {**ev["properties"],
                                "pad": "x" * r.randrange(100, self.limits.max_event_bytes // 2)}
            evs.append(ev)
            size += len(_dumps(ev)) + 1
        return Case("oversized_record", _dumps(evs), (Expected(None, "oversized"),), ())

    def too_many_events(self) -> Case:
        n = self.limits.max_events_per_record + self.rng.choice([1, 2, 100])
        evs: list[Any] = [{}] * n if self.rng.random() < 0.5 else list(range(n))
        return Case("too_many_events", _dumps(evs), (Expected(None, "too_many_events"),), ())

    def bad_single(self) -> Case:
        """One bad event as the whole record (a non-object that is a list goes in an array:
        a bare list would be an array record)."""
        bad, code = self.bad_event()
        if isinstance(bad, list | orjson.Fragment):
            element = _dumps(bad)
            return Case("bad_element", b"[" + element + b"]",
                        (Expected(0, code, element),), ())
        return Case("bad_element", _dumps(bad), (Expected(None, code),), ())

    def mixed_array(self) -> Case:
        r = self.rng
        n = r.choice([2, 3, 5, 10, 20, 50])
        n = min(n, self.limits.max_events_per_record)
        parts: list[bytes] = []
        rejected: list[Expected] = []
        valid: list[Event] = []
        size = 2
        for i in range(n):
            if r.random() < 0.5:
                bad, code = self.bad_event()
                if code == "oversized" and size > self.limits.max_record_bytes // 2:
                    bad, code = 42, "not_object"
                parts.append(_dumps(bad))
                rejected.append(Expected(i, code, parts[-1]))
            else:
                ev = self.odd_valid() if r.random() < 0.3 else self.valid_event()
                parts.append(_dumps(ev))
                valid.append(ev)
            size += len(parts[-1]) + 1
        sep = r.choice([b",", b" , ", b",\n\t"])
        value = b"[" + sep.join(parts) + b"]"
        if len(value) > self.limits.max_record_bytes:
            for ev in valid:
                self.issued.remove(ev)
                self.odd_ids.discard(ev["event_id"])
            return Case("mixed_array", value, (Expected(None, "oversized"),), ())
        return Case("mixed_array", value, tuple(rejected), tuple(valid))

    def duplicate_keys(self) -> Case:
        """The same key twice in one object: the last one wins."""
        r = self.rng
        ev = self.valid_event("dk")
        body = _dumps(ev)[1:-1]
        if r.random() < 0.5:  # a bad value first, the good one last: valid
            value = b'{"type":"teleport","timestamp":"yesterday",' + body + b"}"
            return Case("duplicate_keys", value, (), (ev,))
        self.issued.pop()
        value = b"{" + body + b',"type":"teleport"}'
        return Case("duplicate_keys", value, (Expected(None, "unknown_type"),), ())

    def duplicate_id(self) -> Case:
        """A valid event whose id was used before: the same event again (a retry), or with
        other extra fields (a re-send by another system: same meaning, other details). Both are
        valid for validation; the worker applies one of them (which one depends on arrival
        order, so they differ only where no segment looks)."""
        r = self.rng
        if not self.issued:
            return self.valid_record()
        first = r.choice(self.issued[-500:])
        again = dict(first)
        if r.random() < 0.5:
            again["source"] = "fuzz-resend"
            again["context"] = {"retry": True}
            if again["type"] != "identify":
                again["properties"] = {**again["properties"], "resent": r.random()}
        self.issued.append(again)
        return Case("duplicate_id", _dumps(again), (), (again,))

    def odd_valid_record(self) -> Case:
        ev = self.odd_valid()
        return Case("odd_valid", _dumps(ev), (), (ev,))

    def odd_array(self) -> Case:
        evs = [self.odd_valid() for _ in range(self.rng.randrange(1, 8))]
        value = _dumps(evs)
        if len(value) > self.limits.max_record_bytes:  # pragma: no cover - small limits only
            for ev in evs:
                self.issued.remove(ev)
                self.odd_ids.discard(ev["event_id"])
            return Case("odd_array", value, (Expected(None, "oversized"),), ())
        return Case("odd_array", value, (), tuple(evs))

    # --- streams -----------------------------------------------------------------------------
    #: relative frequency of each class in :meth:`cases` (big records are rarer: they are slow)
    WEIGHTS: Final = {
        "bad_utf8": 6, "not_json": 8, "empty": 3, "json_scalar": 3, "nan_inf": 5,
        "deep_nesting": 3, "huge_string": 2, "oversized_record": 0.3, "too_many_events": 0.5,
        "bad_element": 30, "mixed_array": 12, "duplicate_keys": 3, "duplicate_id": 5,
        "odd_valid": 12, "odd_array": 4,
    }

    def case(self, cls: str | None = None) -> Case:
        """One hostile record of class ``cls`` (weighted random when None)."""
        if cls is None:
            names = list(self.WEIGHTS)
            cls = self.rng.choices(names, [self.WEIGHTS[n] for n in names])[0]
        return self.classes[cls]()

    def cases(self, n: int) -> Iterator[Case]:
        """``n`` hostile records: every class at least once, then weighted at random."""
        for i, cls in enumerate(self.classes):
            if i < n:
                yield self.case(cls)
        for _ in range(n - len(self.classes)):
            yield self.case()


# --- helpers ---------------------------------------------------------------------------------
class _Missing:
    """Marker: remove the field."""


_MISSING: Final = _Missing()


def _set(ev: Event, key: str, value: Any) -> Event:
    out = dict(ev)
    if isinstance(value, _Missing):
        out.pop(key, None)
    else:
        out[key] = value
    return out


def _rfc3339(ms: int, rng: random.Random, offset: str = "Z", fraction: str | None = None
             ) -> str:
    import datetime as dt  # noqa: PLC0415

    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        moment = moment.astimezone(dt.timezone(sign * dt.timedelta(hours=hours,
                                                                   minutes=minutes)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    text += fraction if fraction is not None else f".{moment.microsecond // 1000:03d}"
    return text + offset


def _nested_list(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = {f"l{i}": value}
    return value


_ODD_SCALARS: Final = (1e308, -1e308, 5e-324, 18446744073709551615, -9223372036854775808, 0,
                       -0.0, True, False, None, "", "\u0000", "\U0001f600", "x" * 8192,
                       "\u202e\u2028", "NaN", "Infinity", "1e400", "<script>", "'; DROP")


def _odd_value_list() -> tuple[Callable[[], Any], ...]:
    return (
        *(lambda v=v: v for v in _ODD_SCALARS),
        lambda: [], lambda: {}, lambda: [1, "a", None, True, 1.5],
        lambda: _nested_list(8), lambda: _nested_dict(7), lambda: {"__proto__": {"x": 1}},
        lambda: {"$type": "System.Object", "_seg": [1]}, lambda: {"\u0000": "\u0000"},
    )


_ODD_VALUES: Final = _odd_value_list()


def http_expectation(case: Case, limits: Limits) -> tuple[int, str | None, list[tuple[int, str]]]:
    """What the collector (with these ``limits``) answers to ``case.value`` as a POST body:
    (status, whole-request error code or None, [(index, code)] of the per-event rejections).
    Follows the tables of docs/collector.md."""
    if case.value is None:
        raise ValueError("an HTTP body cannot be absent")
    if len(case.value) > limits.max_record_bytes:
        return 413, "oversized", []
    whole = case.whole
    if whole is not None:
        if whole.code in ("unparsable", "not_object"):
            return 400, whole.code, []
        if whole.code == "too_many_events":
            return 413, "too_many_events", []
        return 400, None, [(0, whole.code)]  # a single event's rejection
    rejected = [(e.index if e.index is not None else 0, e.code) for e in case.rejected]
    if not rejected:
        return 200, None, []
    return (207 if case.valid else 400), None, rejected


# --- hypothesis strategies -------------------------------------------------------------------
def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12), st.sampled_from(INTERNAL_NAMES), st.sampled_from(ODD_IDS),
        st.sampled_from(TYPES), st.sampled_from(_ODD_SCALARS),
    )


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Any JSON value orjson can write (no NaN/Infinity, integers within 64 bits)."""
    keys = st.sampled_from(INTERNAL_NAMES) | st.sampled_from(sorted(RESERVED_NAMES)) | st.text(
        max_size=6)
    return st.recursive(
        json_scalars(),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(keys, children, max_size=4),
        max_leaves=max_leaves,
    )


_BASE: Final[Event] = {"event_id": "h-1", "type": "page_view", "customer_id": "c-1",
                       "timestamp": 1_795_474_800_000, "source": "fuzz",
                       "properties": {"url": "/"}}
_FIELDS: Final = (*sorted(RESERVED_NAMES), "v", "kind", "events", "__proto__", "$type")
_SMALL_JSON: Final = json_values(6)
_PROP_NAMES: Final = st.sampled_from(INTERNAL_NAMES) | st.text(max_size=6)


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event of the generator with fields replaced by arbitrary JSON, dropped, or added
    (envelope and properties); now and then not an object at all."""
    seed = draw(st.integers(0, 2**32 - 1))
    ev: Event = HostileGenerator(seed, _BASE["timestamp"] + 3_600_000).valid_event()
    ev = orjson.loads(orjson.dumps(ev))
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.integers(0, 2))
        if where == 0:
            ev[draw(st.sampled_from(_FIELDS))] = draw(_SMALL_JSON)
        elif where == 1 and isinstance(ev.get("properties"), dict):
            ev["properties"][draw(_PROP_NAMES)] = draw(_SMALL_JSON)
        elif ev:
            ev.pop(draw(st.sampled_from(sorted(ev))))
    if draw(st.integers(0, 20)) == 0:
        return draw(_SMALL_JSON)
    return ev


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Raw record bytes: a record of the seeded generator (any class, valid or not) with up to
    three byte mutations (flip, cut, insert, delete, duplicate a span), or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    seed = draw(st.integers(0, 2**32 - 1))
    gen = HostileGenerator(seed, _BASE["timestamp"] + 3_600_000)
    cls = draw(st.sampled_from(sorted(set(HostileGenerator.WEIGHTS) - {
        "oversized_record", "too_many_events", "huge_string"})))
    value = gen.case(cls).value or b""
    for _ in range(draw(st.integers(0, 3))):
        if not value:
            break
        at = draw(st.integers(0, len(value) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            value = value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1:]
        elif op == 1:
            value = value[:at]
        elif op == 2:
            value = value[:at] + draw(st.sampled_from(_JUNK)) + value[at:]
        elif op == 3:
            value = value[:at] + value[at + 1:]
        else:
            end = draw(st.integers(at, min(len(value), at + 200)))
            value = value[:end] + value[at:]
    return value


_JUNK: Final = (b"\xff", b"\xc3\x28", b"\x00", b'"', b"\\", b"[", b"]", b"{", b"}", b",",
                b":", b"NaN", b"1e400", b'"\\ud800"', b"\n", b" ", b"null", b'"type"',
                b'"event_id":', b"-", b"0", b".", b"e")


def generated_cases(now_ms: int, limits: Limits = DEFAULT_LIMITS) -> st.SearchStrategy[Case]:
    """Cases of :class:`HostileGenerator`, one per drawn seed and class."""
    names = sorted(HostileGenerator.WEIGHTS)
    return st.builds(lambda seed, cls: HostileGenerator(seed, now_ms, limits).case(cls),
                     st.integers(0, 2**32 - 1), st.sampled_from(names))
