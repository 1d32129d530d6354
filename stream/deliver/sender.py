"""The HTTP side of a delivery: one signed POST per attempt (aiohttp), its outcome classified.

Connection errors and timeouts are retried (:class:`~stream.deliver.lane.Outcome` with
``retry``); an answer is classified by :func:`stream.deliver.lane.classify`. Redirects are not
followed (a 3xx is dead-lettered: fix the URL). Errors name the exception type, never the URL
(it may carry credentials) nor the secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from stream.deliver import signing
from stream.deliver.config import Destination
from stream.deliver.lane import Outcome, classify

USER_AGENT = "segstream-deliver/1"
#: At most this much of an answer's body is read (and thrown away).
MAX_ANSWER_BYTES = 64 * 1024


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the delay form only; an HTTP date is ignored).

    >>> retry_after("3"), retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), retry_after(None)
    (3.0, None, None)
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class HttpSender:
    """``await sender(dest, body, attempt)``: POST ``body`` to ``dest.url``, signed."""

    def __init__(self, session: aiohttp.ClientSession,
                 wall: Callable[[], float] = time.time) -> None:
        self.session = session
        self.wall = wall

    async def __call__(self, dest: Destination, body: bytes, attempt: int) -> Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Segstream-Attempt": str(attempt),
                   **signing.headers(dest.secret.encode(), int(self.wall()), body)}
        timeout = aiohttp.ClientTimeout(total=dest.timeout_ms / 1000.0)
        try:
            async with self.session.post(dest.url, data=body, headers=headers, timeout=timeout,
                                         allow_redirects=False) as resp:
                await resp.content.read(MAX_ANSWER_BYTES)
                return classify(resp.status, retry_after(resp.headers.get("Retry-After")))
        except TimeoutError:
            return Outcome(False, True, f"no answer within {dest.timeout_ms} ms", "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, True, f"connection failed ({type(exc).__name__})",
                           "connection")
