"""Which failures are worth retrying: the one place that names third-party transient errors.

segstream's own exceptions carry the answer as a class attribute (``SegstreamError.retriable``,
:mod:`schemas.errors`); the exceptions of the libraries the shell talks to do not, so the
transient ones are listed here, once. :func:`is_retriable` answers for any exception.

>>> from redis.exceptions import ConnectionError as RedisConnectionError
>>> from schemas.bundle import BundleError
>>> [is_retriable(e) for e in (RedisConnectionError("lost"), BundleError("x"), KeyError())]
[True, False, False]
"""

from __future__ import annotations

from typing import Final

from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.errors import RetriableError, SegstreamError

__all__ = ["TRANSIENT_THIRD_PARTY", "RetriableError", "SegstreamError", "is_retriable"]

#: third-party exceptions meaning "try again": a Redis connection lost or timed out, a failover
#: in progress (read-only replica, cluster down, master down, TRYAGAIN during resharding), and
#: any OS-level socket error
TRANSIENT_THIRD_PARTY: Final[tuple[type[BaseException], ...]] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError, TryAgainError,
    MasterDownError, OSError,
)


def is_retriable(err: BaseException) -> bool:
    """Whether the operation that raised ``err`` may succeed when tried again: the
    ``retriable`` flag of segstream's own errors, membership of :data:`TRANSIENT_THIRD_PARTY`
    for the others."""
    if isinstance(err, SegstreamError):
        return err.retriable
    return isinstance(err, TRANSIENT_THIRD_PARTY)
