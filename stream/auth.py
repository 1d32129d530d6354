"""Shared secret-handling helpers of the HTTP surfaces (membership API tokens, collector keys).

Secrets are kept only as SHA-256 digests: every digest has the same length, so the constant-time
compare (:func:`hmac.compare_digest`) reveals nothing through its duration, and a revocation
list can name a secret without holding it (``printf %s SECRET | sha256sum``). No helper here ever
puts a secret (not even a malformed one) into an error message.

>>> d = digest("s3cret-token-0123456789")
>>> any_equal(d, [digest("other"), d]), find_equal(d, [(digest("x"), "web"), (d, "shop")])
(True, 'shop')
>>> bearer_token("Bearer  abc "), bearer_token("Basic abc"), bearer_token(None)
('abc', '', '')
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from aiohttp.http_exceptions import HttpProcessingError

from stream.settings import SettingsError

T = TypeVar("T")

#: Shortest accepted token or write key (shorter ones are guessable).
SECRET_MIN_LENGTH = 16


def digest(secret: str) -> bytes:
    """The SHA-256 digest a secret is stored and compared as."""
    return hashlib.sha256(secret.encode()).digest()


def any_equal(value: bytes, candidates: Iterable[bytes]) -> bool:
    """Constant-time membership: compares against every candidate, no early exit."""
    found = False
    for c in candidates:
        found |= hmac.compare_digest(value, c)
    return found


def find_equal(value: bytes, candidates: Sequence[tuple[bytes, T]]) -> T | None:
    """The payload of the candidate whose digest equals ``value`` (None: none), comparing
    against every candidate so the time taken does not depend on which one matched."""
    found: T | None = None
    for d, payload in candidates:
        if hmac.compare_digest(value, d):
            found = payload
    return found


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ('' when absent or another
    scheme); the scheme is case-insensitive and spaces around the token are ignored."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def read_secret_lines(path: str, variable: str) -> list[str]:
    """The non-blank, non-``#`` lines of a secrets file (e.g. a mounted Kubernetes secret);
    :class:`SettingsError` naming ``variable`` (never the contents) when it cannot be read."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"{variable}={path}: {exc.strerror}") from None
    return [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")]


def parse_revoked(entries: tuple[str, ...], variable: str) -> tuple[bytes, ...]:
    """SHA-256 hex digests (any case) of revoked secrets (a list setting, already split).

    >>> len(parse_revoked(("AB" * 32,), "X")[0])
    32
    """
    revoked: list[bytes] = []
    for entry in (d.strip().lower() for d in entries):
        try:
            value = bytes.fromhex(entry)
        except ValueError:
            value = b""
        if len(value) != 32:
            raise SettingsError(f"{variable}: entries must be SHA-256 hex digests "
                                "(`printf %s TOKEN | sha256sum`)")
        revoked.append(value)
    return tuple(revoked)


class HttpParserErrorScrubber(logging.Filter):
    """Keeps request bytes out of aiohttp's "Error handling request" log records, and keeps
    hostile clients from flooding the log with them.

    aiohttp logs a malformed or over-long request line or header (``LineTooLong`` beyond 8190
    bytes, ``BadHttpMessage``...) with a message quoting up to 100 bytes of it: an
    ``Authorization`` header or a ``?write_key=`` URL would put a secret into the log. This
    filter replaces such a record's text with the error's kind only, and lets at most one such
    record through per ``interval_s`` seconds; the next one says how many it held back.

    >>> f, now = HttpParserErrorScrubber(interval_s=10, clock=lambda: now), 0.0
    >>> def record() -> logging.LogRecord:
    ...     return logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "Error handling "
    ...                              "request from %s", ("1.2.3.4",), (None, HttpProcessingError(
    ...                              code=400, message="secret"), None))
    >>> first = record(); f.filter(first), first.getMessage().split(": ")[1]
    (True, 'HttpProcessingError (status 400; request bytes not logged)')
    >>> [f.filter(record()) for _ in range(3)]
    [False, False, False]
    >>> now = 11.0; later = record(); f.filter(later), later.getMessage()[-34:]
    (True, '; 3 more since the last one logged')
    """

    def __init__(self, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self.last: float | None = None
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            self.held += 1
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "bad HTTP request from %s: %s (status %d; request bytes not logged)"
        record.args = (remote, type(exc).__name__, exc.code)
        if self.held:
            record.msg += "; %d more since the last one logged"
            record.args = (*record.args, self.held)
        record.exc_info = record.exc_text = None
        self.last, self.held = now, 0
        return True


def scrub_http_parser_errors(logger_name: str = "aiohttp.server") -> None:
    """Install :class:`HttpParserErrorScrubber` on aiohttp's server logger (once; a server
    started again in the same process starts with a fresh allowance)."""
    logger = logging.getLogger(logger_name)
    for f in logger.filters:
        if isinstance(f, HttpParserErrorScrubber):
            f.last, f.held = None, 0
            return
    logger.addFilter(HttpParserErrorScrubber())
