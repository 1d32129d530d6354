"""Membership HTTP API on the worker's Faust web server (docs/api.md is the reference).

Routes (JSON everywhere, errors as ``{"error": {"code", "message"}}``):

- ``GET /customers/{id}/segments``: a customer's segments and versions, read from Redis;
- ``GET /segments``: the definitions the worker runs, with sizes summed over all partitions;
- ``GET /segments/{name}/members?cursor=&limit=``: members, paged with an opaque cursor;
- ``GET /health`` (the process answers) and ``GET /ready`` (started, assigned once, Redis
  answers; a rebalance does not make it unready).

State lives in Redis, so any worker answers for any customer. Authentication is an aiohttp
middleware in front of *every* route of the web server (Faust's own pages included) except
:data:`EXEMPT_PATHS`: probes and Prometheus carry no credentials, and what they show (liveness,
a readiness reason, metrics) is not customer data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from processors.lang import ast
from schemas.errors import SegstreamError
from schemas.partitioner import partition_for
from state.redis_store import RedisStore
from state.store import StateStore
from stream.auth import (
    SECRET_MIN_LENGTH,
    any_equal,
    bearer_token,
    digest,
    parse_revoked,
    read_secret_lines,
    scrub_http_parser_errors,
)
from stream.connections import redis_for
from stream.definitions import file_catalogue, file_types
from stream.settings import Settings, SettingsError
from stream.worker.faust_adapter import on_rebalance, web_application

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Paths served without a token (see the module docstring).
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TOKEN_MIN_LENGTH = SECRET_MIN_LENGTH
MAX_ID_LENGTH = 128  # customer ids and segment names (the event contract's limit)
READY_REDIS_TIMEOUT_S = 1.0
#: Largest request body the API accepts (it takes none: every route is a GET); larger ones get
#: 413 ``payload_too_large`` (aiohttp's own limits: request line and each header 8190 bytes).
API_MAX_BODY_BYTES = 16 * 1024
_CURSOR_VERSION = 1


class ApiError(SegstreamError):
    """An error answered as ``{"error": {"code", "message"}}`` with HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status,
                        content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    resp = json_response({"error": {"code": err.code, "message": err.message}}, err.status)
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="segstream"'
    return resp


# --- authentication ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Bearer-token check. Tokens are kept as SHA-256 digests (equal length, so the
    constant-time compare reveals nothing through its duration); revoked ones as digests too."""

    accepted: tuple[bytes, ...]
    revoked: tuple[bytes, ...] = ()
    insecure: bool = False  # SEGSTREAM_API_AUTH=none: no check at all

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuth:
        """Tokens from the settings and the tokens file; :class:`SettingsError` if unusable."""
        tokens = list(settings.api.tokens)
        if settings.api.tokens_file:
            tokens += read_secret_lines(settings.api.tokens_file, "SEGSTREAM_API_TOKENS_FILE")
        short = sum(1 for t in tokens if len(t) < TOKEN_MIN_LENGTH)
        if short:  # never echo a token, not even a bad one
            raise SettingsError(f"{short} API token(s) shorter than {TOKEN_MIN_LENGTH} "
                                "characters (SEGSTREAM_API_TOKENS / SEGSTREAM_API_TOKENS_FILE)")
        revoked = parse_revoked(settings.api.revoked_tokens, "SEGSTREAM_API_REVOKED_TOKENS")
        return cls(tuple(digest(t) for t in tokens), revoked,
                   insecure=settings.api.auth == "none")

    def check(self, authorization: str | None) -> None:
        """Raise :class:`ApiError` unless ``authorization`` carries an accepted token.

        401: no/malformed header or unknown token; 403: revoked token; 503: no token configured.
        """
        if self.insecure:
            return
        if not self.accepted:
            raise ApiError(503, "auth_not_configured",
                           "no API token is configured (SEGSTREAM_API_TOKENS or "
                           "SEGSTREAM_API_TOKENS_FILE); SEGSTREAM_API_AUTH=none disables "
                           "authentication for local use")
        token = bearer_token(authorization)
        if not token:
            raise ApiError(401, "missing_token", "send the header `Authorization: Bearer <token>`")
        given = digest(token)
        revoked = any_equal(given, self.revoked)
        accepted = any_equal(given, self.accepted)
        if revoked:
            raise ApiError(403, "token_revoked", "this token has been revoked")
        if not accepted:
            raise ApiError(401, "invalid_token", "the bearer token is not valid")


# --- member pages -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a member walk resumes: a partition, an SSCAN cursor in it, and, only after a page
    cut inside a whole-set scan step, the last member returned (members are then taken in
    name order after it)."""

    partition: int = 0
    scan: int = 0
    after: str | None = None


def encode_cursor(segment: str, cursor: Cursor) -> str:
    """The opaque, URL-safe text of ``cursor`` (bound to ``segment``).

    >>> c = Cursor(3, 17, None)
    >>> decode_cursor("vip", encode_cursor("vip", c), partitions=8) == c
    True
    """
    raw = orjson.dumps([_CURSOR_VERSION, segment, cursor.partition, cursor.scan, cursor.after])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(segment: str, text: str, partitions: int) -> Cursor:
    """The cursor of ``text``; :class:`ApiError` (400 ``invalid_cursor``) if it is not one of
    ours, for another segment, or for more partitions than the worker has."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        version, seg, p, scan, after = raw
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned") from None
    ok = (version == _CURSOR_VERSION and isinstance(p, int) and isinstance(scan, int)
          and 0 <= p < partitions and scan >= 0 and (after is None or isinstance(after, str))
          and (after is None or scan == 0))
    if not ok:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned")
    if seg != segment:
        raise ApiError(400, "invalid_cursor", "the cursor belongs to another segment")
    return Cursor(p, scan, after)


async def page_members(store: StateStore, segment: str, partitions: int, start: Cursor,
                       limit: int) -> tuple[list[str], Cursor | None]:
    """Up to ``limit`` members from ``start`` on, and the cursor of the next page (None: done).

    Partition by partition, SSCAN step by step. A step that does not fit the page is left for
    the next page (its start cursor is returned), so a member is lost neither between pages
    nor between partitions: Redis' guarantee (a member present for the whole walk is returned
    at least once) holds across requests. A first step larger than the whole page is either
    the whole set (start and next cursor 0: cut in name order, resumed after the last name
    returned, correct because every present member <= that name was in that step) or, rarely
    (tiny limits), a hashtable step Redis cannot split: returned whole, over ``limit``.
    """
    out: list[str] = []
    p, scan, after = start.partition, start.scan, start.after
    while p < partitions:
        want = limit - len(out)
        if want <= 0:
            return out, Cursor(p, scan, after)
        # a page's first step asks for a little less than fits (steps run over the hint by a
        # few members); the next one for the rest, and is left for the next page if too big
        hint = max(1, want * 3 // 4) if not out else want
        nxt, batch = await store.scan_members(p, segment, scan, hint)
        if after is not None:
            batch = sorted(m for m in batch if m > after)
        if len(batch) > want:
            if out:
                return out, Cursor(p, scan, after)
            if scan == 0 and nxt == 0:
                batch = sorted(batch)[:want]
                return batch, Cursor(p, 0, batch[-1])
        out.extend(batch)
        after = None
        if nxt == 0:
            p, scan = p + 1, 0
        else:
            scan = nxt
    return out, None


# --- the API ----------------------------------------------------------------------------------
def _returning(catalogue: ast.Catalogue) -> Callable[[], ast.Catalogue]:
    return lambda: catalogue


class WorkerStatus(Protocol):
    """What readiness reads of the worker (the Faust app has it)."""

    @property
    def should_stop(self) -> bool: ...


class MembershipApi:
    """The route logic, independent of HTTP (the views below only parse and format)."""

    def __init__(self, settings: Settings, status: WorkerStatus, *,
                 definitions: Callable[[], ast.Catalogue] | None = None,
                 definitions_ready: asyncio.Event | None = None,
                 store: StateStore | None = None,
                 ping: Callable[[], Awaitable[Any]] | None = None) -> None:
        """``definitions``: what the segmentation agent runs now (None: a worker without it
        serves the definitions file); ``definitions_ready``: set once it read the definitions
        topic (None: nothing to wait for)."""
        self.status = status
        self.settings = settings
        self.partitions = settings.topics.bundle_partitions
        self.definitions: Callable[[], ast.Catalogue] = (
            definitions if definitions is not None
            else _returning(file_catalogue(settings.segmentation.segments_file,
                                           file_types(settings.ingest.types_file))))
        self._definitions_ready = definitions_ready
        self._store = store
        self._ping = ping
        self._client: Any = None
        self.started = False  # set by an app task: Faust ran its on_started
        self.assignments = 0  # partition assignments seen

    @property
    def store(self) -> StateStore:
        if self._store is None:  # created on first use, inside the worker's event loop
            self._client = redis_for(self.settings)
            self._store = RedisStore(self._client, namespace=self.settings.redis.namespace)
            self._ping = self._client.ping
        return self._store

    def use_store(self, store: StateStore, ping: Callable[[], Awaitable[Any]] | None) -> None:
        """Serve from ``store`` (tests: a MemoryStore) instead of the configured Redis."""
        self._store, self._ping = store, ping

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def customer_segments(self, customer_id: str) -> dict[str, Any]:
        _check_id("customer id", customer_id)
        p = partition_for(customer_id, self.partitions)
        store = self.store
        versions = await store.segments_of(p, customer_id)
        if not versions:
            (linked,) = await store.aliases(p, [customer_id])
            if linked is not None:  # its profile moved (only version counters stay behind)
                raise ApiError(404, "customer_aliased",
                               f"this anonymous id was aliased to customer {linked!r}: "
                               f"ask /customers/{{id}}/segments for that id")
        if not versions and not await store.has_state(p, customer_id):
            raise ApiError(404, "customer_not_found",
                           "no state for this customer id (never seen, forgotten, or merged "
                           "into a known customer by an alias)")
        return {"customer_id": customer_id, "partition": p,
                "segments": [{"segment": s, "version": v} for s, v in sorted(versions.items())]}

    async def segments(self) -> dict[str, Any]:
        defs = self.definitions()
        sizes = await self.store.sizes(list(range(self.partitions)))
        return {"definitions_version": defs.version, "segments": [
            {"name": s.name, "description": s.description, "condition": s.condition_text,
             "enabled": s.enabled, "tags": list(s.tags), "size": sizes.get(s.name, 0)}
            for s in defs.segments]}

    async def members(self, segment: str, cursor: str | None, limit: str | None
                      ) -> dict[str, Any]:
        if segment not in {s.name for s in self.definitions().segments}:
            raise ApiError(404, "unknown_segment", f"no segment named {segment[:MAX_ID_LENGTH]!r}")
        n = _parse_limit(limit)
        start = decode_cursor(segment, cursor, self.partitions) if cursor else Cursor()
        members, nxt = await page_members(self.store, segment, self.partitions, start, n)
        return {"segment": segment, "members": list(dict.fromkeys(members)),
                "next_cursor": None if nxt is None else encode_cursor(segment, nxt)}

    async def readiness(self) -> list[str]:
        """Why the worker is not ready (empty: ready); see docs/api.md."""
        reasons: list[str] = []
        if self.status.should_stop:
            reasons.append("stopping")
        elif not self.started:
            reasons.append("starting: the Faust app has not finished starting")
        elif self.assignments == 0:
            reasons.append("waiting for the first partition assignment of the consumer group")
        # A rebalance is no reason: the API reads Redis, which every worker can, whatever
        # partitions it owns; a rolling restart rebalances every worker, and failing then would
        # take the API out of the Service on all of them at once.
        pending = self._definitions_ready
        if pending is not None and not pending.is_set():
            reasons.append("reading the definitions topic")
        try:
            _ = self.store
            if self._ping is not None:
                await asyncio.wait_for(self._ping(), READY_REDIS_TIMEOUT_S)
        except Exception as exc:  # any failure means "not ready", with its kind
            reasons.append(f"redis not answering ({type(exc).__name__})")
        return reasons


def _check_id(what: str, value: str) -> None:
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ApiError(400, "invalid_id", f"a {what} has 1 to {MAX_ID_LENGTH} characters")


def _parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return n


# --- wiring -----------------------------------------------------------------------------------
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def auth_middleware(auth: TokenAuth) -> Any:
    """aiohttp middleware: body size limit, token check (except :data:`EXEMPT_PATHS`), JSON
    errors, and a JSON 500 for unexpected failures (logged without the request headers: no
    token in logs)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if (request.content_length or 0) > API_MAX_BODY_BYTES:
                raise ApiError(413, "payload_too_large",
                               f"request bodies are limited to {API_MAX_BODY_BYTES} bytes")
            if request.path not in EXEMPT_PATHS:
                auth.check(request.headers.get("Authorization"))
            return await handler(request)
        except ApiError as err:
            return error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, "http_error")
            return error_response(ApiError(exc.status, code, exc.reason))
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path)
            return error_response(ApiError(500, "internal_error", "internal error (logged)"))

    return middleware


def attach_api(app: faust.App, settings: Settings, *,
               definitions: Callable[[], ast.Catalogue] | None = None,
               definitions_ready: asyncio.Event | None = None) -> MembershipApi:
    """Add the API routes and the auth middleware to ``app``'s web server (no I/O here); see
    :class:`MembershipApi` for ``definitions`` and ``definitions_ready``."""
    auth = TokenAuth.from_settings(settings)
    scrub_http_parser_errors()  # aiohttp would log bytes of a malformed request (a token)
    if auth.insecure:
        log.warning("SEGSTREAM_API_AUTH=none: the membership API is open to anyone who can "
                    "reach %s:%d", settings.process.web_host, settings.process.web_port)
    api = MembershipApi(settings, app, definitions=definitions,
                        definitions_ready=definitions_ready)
    web_app = web_application(app)
    web_app.middlewares.append(auth_middleware(auth))

    async def close(_: web.Application) -> None:
        await api.close()

    web_app.on_cleanup.append(close)

    async def started() -> None:
        api.started = True

    app.task(started)

    async def assigned(_: set[int]) -> None:
        api.assignments += 1

    on_rebalance(app, None, assigned=assigned)

    @app.page("/health", name="segstream.health")
    async def health(view: Any, request: Any) -> Any:
        return json_response({"status": "ok"})

    @app.page("/ready", name="segstream.ready")
    async def ready(view: Any, request: Any) -> Any:
        reasons = await api.readiness()
        if reasons:
            return json_response({"status": "not_ready", "reasons": reasons}, 503)
        return json_response({"status": "ready"})

    @app.page("/customers/{customer_id}/segments", name="segstream.customer_segments")
    async def customer(view: Any, request: Any, customer_id: str) -> Any:
        return json_response(await api.customer_segments(customer_id))

    @app.page("/segments", name="segstream.segments")
    async def segments(view: Any, request: Any) -> Any:
        return json_response(await api.segments())

    @app.page("/segments/{name}/members", name="segstream.members")
    async def members(view: Any, request: Any, name: str) -> Any:
        q = request.query
        return json_response(await api.members(name, q.get("cursor"), q.get("limit")))

    return api
