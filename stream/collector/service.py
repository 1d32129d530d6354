"""HTTP collector: websites and back ends post events; valid ones go to the raw Kafka topic.

``POST /v1/events`` takes one event object or a JSON array of them (docs/collector.md is the
reference). Per request: CORS origin check, write key (``Authorization: Bearer``, ``X-Write-Key``
or, for ``navigator.sendBeacon`` which cannot set headers, ``?write_key=``), size limits, the
per-key token bucket, validation with :func:`schemas.validation.parse_record` (the ingest rules,
so what the collector accepts ingest accepts), then ONE raw record holding the JSON array of the
valid canonical events (split only if it would exceed the record limit), keyed by the first
event's routing id. The answer is sent only after Kafka acknowledged the record (acks=all,
idempotent producer): a 2xx never loses an event. Invalid events are answered, not produced.

This module is the imperative shell around small pure pieces (:class:`WriteKeys`,
:class:`TokenBucket`, :func:`build_result`, :func:`pack_records`) that the unit tests drive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from schemas.errors import ErrorCode, SegstreamError
from schemas.validation import Limits, Rejected, parse_record, partition_key
from stream.auth import (
    SECRET_MIN_LENGTH,
    any_equal,
    bearer_token,
    digest,
    find_equal,
    parse_revoked,
    read_secret_lines,
)
from stream.eventtypes import LiveTypes
from stream.process_metrics import register_process_metrics
from stream.settings import Settings, SettingsError

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
#: Largest raw record the collector produces: below the broker's default message.max.bytes
#: (1 MiB + 12) with room for the record batch overhead and the key.
PRODUCE_MAX_BYTES = 960 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Write-Key"
PREFLIGHT_MAX_AGE_S = "600"
MAX_SOURCE_CHARS = 128  # the event contract's id limit
UNKNOWN_SOURCE = "unknown"  # what validation fills in for an event without a source


class CollectorError(SegstreamError):
    """A whole-request failure answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def json_response(value: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, headers=headers,
                        content_type="application/json")


# --- write keys -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WriteKeys:
    """Write keys (as SHA-256 digests) and the source each one stamps; revoked digests."""

    keys: tuple[tuple[bytes, str], ...]
    revoked: tuple[bytes, ...] = ()
    insecure: bool = False  # SEGSTREAM_COLLECTOR_AUTH=none

    @classmethod
    def from_settings(cls, settings: Settings) -> WriteKeys:
        """Keys from the settings and the keys file; :class:`SettingsError` if unusable (the
        message counts bad entries, it never shows one)."""
        entries = list(settings.collector.write_keys)
        if settings.collector.write_keys_file:
            entries += read_secret_lines(settings.collector.write_keys_file,
                                         "SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE")
        pairs: list[tuple[bytes, str]] = []
        malformed = short = 0
        for entry in entries:
            source, sep, key = entry.partition("=")
            source, key = source.strip(), key.strip()
            if not sep or not source or len(source) > MAX_SOURCE_CHARS:
                malformed += 1
            elif len(key) < SECRET_MIN_LENGTH:
                short += 1
            else:
                pairs.append((digest(key), source))
        if malformed or short:
            raise SettingsError(
                f"SEGSTREAM_COLLECTOR_WRITE_KEYS(_FILE): {malformed} entrie(s) not "
                f"`source=key` (source 1..{MAX_SOURCE_CHARS} characters), {short} key(s) "
                f"shorter than {SECRET_MIN_LENGTH} characters")
        revoked = parse_revoked(settings.collector.revoked_keys,
                                "SEGSTREAM_COLLECTOR_REVOKED_KEYS")
        return cls(tuple(pairs), revoked, insecure=settings.collector.auth == "none")

    def check(self, key: str) -> tuple[bytes, str]:
        """(the key's digest, its source) or :class:`CollectorError`: 401 missing or unknown
        key, 403 revoked, 503 no key configured."""
        if self.insecure:
            return b"", UNKNOWN_SOURCE
        if not self.keys:
            raise CollectorError(503, "auth_not_configured",
                                 "no write key is configured (SEGSTREAM_COLLECTOR_WRITE_KEYS or "
                                 "SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE)")
        if not key:
            raise CollectorError(401, "missing_key", "send `Authorization: Bearer <write key>` "
                                 "or `X-Write-Key: <write key>`")
        given = digest(key)
        revoked = any_equal(given, self.revoked)
        source = find_equal(given, self.keys)
        if revoked:
            raise CollectorError(403, "key_revoked", "this write key has been revoked")
        if source is None:
            raise CollectorError(401, "invalid_key", "the write key is not valid")
        return given, source


def request_key(headers: Any, query: Any) -> str:
    """The write key of a request: bearer token, else ``X-Write-Key``, else ``?write_key=``."""
    return (bearer_token(headers.get("Authorization")) or headers.get("X-Write-Key", "").strip()
            or query.get("write_key", "").strip())


# --- rate limit -------------------------------------------------------------------------------
@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second up to ``capacity``; starts full.

    >>> b = TokenBucket(rate=10.0, capacity=20, tokens=20.0, updated=0.0)
    >>> b.take(15, now=0.0), b.take(10, now=0.0), b.take(10, now=0.5)
    (0.0, 0.5, 0.0)
    """

    rate: float
    capacity: int
    tokens: float
    updated: float

    def take(self, cost: int, now: float) -> float:
        """Take ``cost`` tokens (clamped to the capacity) and return 0.0, or take nothing and
        return how many seconds until they would be there."""
        tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        need = min(cost, self.capacity)
        if tokens >= need:
            self.tokens = tokens - need
            return 0.0
        self.tokens = tokens
        return (need - tokens) / self.rate


@dataclass(slots=True)
class RateLimiter:
    """One :class:`TokenBucket` per write key (keys are configured, so the map is bounded)."""

    rate: float
    capacity: int
    clock: Callable[[], float] = time.monotonic
    buckets: dict[bytes, TokenBucket] = field(default_factory=dict)

    def take(self, key: bytes, cost: int) -> float:
        """0.0 when admitted, else the seconds to wait (a disabled limiter admits everything)."""
        if self.rate <= 0 or cost <= 0:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.capacity,
                                                     float(self.capacity), now)
        return bucket.take(cost, now)


# --- results and records ----------------------------------------------------------------------
#: Whole-record rejections answered as request errors (status, code); the others concern the
#: request's one event and are answered like an event rejection.
_WHOLE_ERRORS = {ErrorCode.UNPARSABLE: 400, ErrorCode.NOT_OBJECT: 400,
                 ErrorCode.TOO_MANY_EVENTS: 413}


def build_result(accepted: int, rejected: Sequence[Rejected]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a validated request: 200 all accepted (also an empty array), 207
    some rejected, 400 all rejected. A single-object request's rejection gets index 0.

    >>> r = Rejected(None, ErrorCode.UNKNOWN_TYPE, "`type` is 'x'", b"")
    >>> build_result(0, [r])
    (400, {'accepted': 0, 'rejected': [{'index': 0, 'code': 'unknown_type', 'message': "`type` is 'x'"}]})
    """  # noqa: E501
    body = {"accepted": accepted, "rejected": [
        {"index": r.index or 0, "code": r.code.value, "message": r.message} for r in rejected]}
    if not rejected:
        return 200, body
    return (207 if accepted else 400), body


def _cost(body: bytes) -> int:
    """Rate-limit cost of a body: its number of events (decoded before validation so that a
    limited key costs no validation work; orjson decodes ~1 GB/s, small next to validation).

    >>> _cost(b'[{}, {}]'), _cost(b'{}'), _cost(b'not json')
    (2, 1, 1)
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 1  # parse_record reports it with the exact reason
    return len(decoded) if type(decoded) is list else 1


def stamp_source(events: list[dict[str, Any]], source: str) -> None:
    """Give the key's source to events that came without one (validation filled in
    ``unknown``); events naming their own source keep it."""
    if source == UNKNOWN_SOURCE:
        return
    for ev in events:
        if ev["source"] == UNKNOWN_SOURCE:
            ev["source"] = source


def pack_records(events: list[dict[str, Any]], max_bytes: int) -> list[bytes]:
    """The raw record values for ``events``: one JSON array, or, only when that would exceed
    ``max_bytes``, consecutive arrays that each fit (order kept). An event too big on its own
    cannot happen: validation bounds events far below any record limit.

    >>> [len(orjson.loads(r)) for r in pack_records([{"a": "x" * 10}] * 5, 40)]
    [2, 2, 1]
    """
    whole = orjson.dumps(events)
    if len(whole) <= max_bytes:
        return [whole]
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 2  # the brackets
    for ev in events:
        enc = orjson.dumps(ev)
        if parts and size + len(enc) + 1 > max_bytes:
            out.append(b"[" + b",".join(parts) + b"]")
            parts, size = [], 2
        parts.append(enc)
        size += len(enc) + 1
    out.append(b"[" + b",".join(parts) + b"]")
    return out


# --- the service ------------------------------------------------------------------------------
class Producer(Protocol):
    """What the collector needs of a Kafka producer (aiokafka's AIOKafkaProducer fits)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None
                   ) -> Awaitable[Any]: ...


class Metrics:
    """The collector's Prometheus metrics, in a registry of its own (served on /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        register_process_metrics(self.registry)  # process_* and python_*, like the worker
        self.requests = Counter("segstream_collector_requests", "Event POSTs answered, by "
                                "HTTP status.", ["status"], registry=self.registry)
        self.events = Counter("segstream_collector_events", "Events received, by outcome "
                              "(accepted: produced; rejected: invalid, answered only).",
                              ["outcome"], registry=self.registry)
        self.produce_seconds = Histogram(
            "segstream_collector_produce_seconds", "Time until Kafka acknowledged a request's "
            "records.", registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))


class Collector:
    """The request logic (the aiohttp wiring is :func:`create_app`)."""

    def __init__(self, settings: Settings, producer: Producer | None = None, *,
                 clock_ms: Callable[[], int] | None = None,
                 types: LiveTypes | None = None) -> None:
        self.settings = settings
        #: the custom event types accepted now (the types file's, then the topic's)
        self.types = types if types is not None else LiveTypes.from_settings(settings)
        self.topic = settings.topic("raw")
        self.keys = WriteKeys.from_settings(settings)
        self.limits = Limits(max_event_bytes=settings.ingest.max_event_bytes,
                             max_record_bytes=settings.ingest.max_record_bytes,
                             max_events_per_record=settings.ingest.max_events_per_record,
                             max_future_ms=settings.ingest.max_future_ms)
        self.record_bytes = min(settings.ingest.max_record_bytes, PRODUCE_MAX_BYTES)
        self.limiter = RateLimiter(settings.collector.rate_per_s, settings.collector.rate_burst)
        origins = set(settings.collector.cors_origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(origins - {"*"})
        self.producer = producer
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.metrics = Metrics()

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def post_events(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Authenticate, limit, validate and produce one request body; (status, JSON body)."""
        key_digest, source = self.keys.check(key)
        if len(body) > self.limits.max_record_bytes:
            raise CollectorError(413, "oversized", f"body of {len(body)} bytes exceeds "
                                 f"{self.limits.max_record_bytes} bytes")
        wait = self.limiter.take(key_digest, _cost(body)) if self.limiter.rate > 0 else 0.0
        if wait:
            raise CollectorError(429, "rate_limited", "too many events for this write key; "
                                 "retry after the Retry-After seconds",
                                 {"Retry-After": str(max(1, math.ceil(wait)))})
        good, bad = parse_record(body, self.clock_ms(), self.limits, self.types.schema)
        if len(bad) == 1 and bad[0].index is None and bad[0].code in _WHOLE_ERRORS:
            raise CollectorError(_WHOLE_ERRORS[bad[0].code], bad[0].code.value, bad[0].message)
        if good:
            stamp_source(good, source)
            await self.produce(good)
        self.metrics.events.labels("accepted").inc(len(good))
        self.metrics.events.labels("rejected").inc(len(bad))
        return build_result(len(good), bad)

    async def produce(self, events: list[dict[str, Any]]) -> None:
        """Produce the events and wait for Kafka's acknowledgement (503 when it does not come)."""
        if self.producer is None:
            raise CollectorError(503, "starting", "the collector is not connected to Kafka yet",
                                 {"Retry-After": "1"})
        key = partition_key(events[0]).encode()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.collector.produce_timeout_ms / 1000):
                # send() calls in order (same key, same partition: order kept), then one wait
                futures = [await self.producer.send(self.topic, value, key)
                           for value in pack_records(events, self.record_bytes)]
                await asyncio.gather(*futures)
        except Exception as exc:  # any Kafka failure: the client must retry
            log.warning("produce to %s failed: %s", self.topic, type(exc).__name__)
            raise CollectorError(503, "kafka_unavailable", "the events could not be stored; "
                                 "retry (duplicates are dropped by event id)",
                                 {"Retry-After": "1"}) from None
        self.metrics.produce_seconds.observe(time.perf_counter() - started)


# --- HTTP wiring ------------------------------------------------------------------------------
class AccessLogger(AbstractAccessLogger):
    """Access log without the query string (``?write_key=`` must never reach a log)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms", request.remote, request.method, request.path,
                         response.status, time * 1000)


def _cors_headers(collector: Collector, request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not collector.origin_allowed(origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Expose-Headers": "Retry-After"}


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    resp = json_response({"error": {"code": code, "message": message}}, status, headers)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="segstream-collector"'
    return resp


class _Handlers:
    """The collector's HTTP handlers and its middleware's work (:func:`create_app` routes them)."""

    __slots__ = ("collector", "max_body")

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.max_body = collector.limits.max_record_bytes

    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware: origin check, JSON errors, CORS headers, the request counter."""
        cors = _cors_headers(self.collector, request)
        try:
            origin = request.headers.get("Origin")
            if origin and not cors and request.path == EVENTS_PATH:
                raise CollectorError(403, "origin_not_allowed", "this origin may not post "
                                     "events (SEGSTREAM_COLLECTOR_CORS_ORIGINS)")
            resp = await handler(request)
        except CollectorError as err:
            resp = _error(err.status, err.code, err.message, {**err.headers, **cors})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = self._http_error(exc, cors)
        except Exception:
            log.exception("collector request %s %s failed", request.method, request.path)
            resp = _error(500, "internal_error", "internal error (logged)", cors)
        else:
            resp.headers.update(cors)
        if request.path == EVENTS_PATH and request.method == "POST":
            self.collector.metrics.requests.labels(str(resp.status)).inc()
        return resp

    def _http_error(self, exc: web.HTTPException, cors: dict[str, str]) -> web.Response:
        """aiohttp's own 4xx/5xx (no route, wrong method, body too long) as a JSON error."""
        code = {404: "not_found", 405: "method_not_allowed",
                413: "oversized"}.get(exc.status, "http_error")
        message = (f"body exceeds {self.max_body} bytes" if exc.status == 413 else exc.reason)
        return _error(exc.status, code, message, cors)

    async def post_events(self, request: web.Request) -> web.Response:
        max_body = self.max_body
        if request.content_length is not None and request.content_length > max_body:
            raise CollectorError(413, "oversized", f"body of {request.content_length} bytes "
                                 f"exceeds {max_body} bytes")
        key = request_key(request.headers, request.query)
        self.collector.keys.check(key)  # before reading the body: no work for strangers
        body = await self._read_body(request)
        status, result = await self.collector.post_events(key, body)
        return json_response(result, status)

    @staticmethod
    async def _read_body(request: web.Request) -> bytes:
        try:
            return await request.read()
        except RequestPayloadError:  # e.g. `Content-Encoding: gzip` on a body that is not
            # The rest cannot be read: end the body, so that aiohttp does not try to drain it
            # after the answer (it would fail again and log an unhandled exception).
            request.content.feed_eof()
            encoding = request.headers.get("Content-Encoding", "")[:32]
            raise CollectorError(400, "unparsable", "the body could not be read"
                                 + (f" (Content-Encoding: {encoding!r})" if encoding else "")
                                 ) from None
        except ConnectionResetError:  # the client left before sending the whole body
            raise CollectorError(400, "unparsable", "the connection closed before the whole "
                                 "body arrived") from None

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not self.collector.origin_allowed(origin):
            raise CollectorError(403, "origin_not_allowed", "this origin may not post events "
                                 "(SEGSTREAM_COLLECTOR_CORS_ORIGINS)")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S})

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})  # liveness: the process answers

    async def ready(self, request: web.Request) -> web.Response:
        if self.collector.producer is None:
            return json_response({"status": "not_ready",
                                  "reasons": ["not connected to Kafka yet"]}, 503)
        return json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.collector.metrics.registry),
                            content_type="text/plain", charset="utf-8")


def create_app(collector: Collector) -> web.Application:
    """The aiohttp application of ``collector`` (no I/O; the caller starts the producer)."""
    h = _Handlers(collector)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await h.guard(request, handler)

    # client_max_size: aiohttp refuses (413) a longer body without buffering it all
    app = web.Application(middlewares=[middleware], client_max_size=h.max_body)
    app.router.add_post(EVENTS_PATH, h.post_events)
    app.router.add_route("OPTIONS", EVENTS_PATH, h.preflight)
    app.router.add_get("/health", h.health)
    app.router.add_get("/ready", h.ready)
    app.router.add_get("/metrics", h.metrics)
    return app
