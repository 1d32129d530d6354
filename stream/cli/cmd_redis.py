"""`segstream redis-rebuild`: rebuild membership keys from the stored customer states.

The work is :func:`stream.redis_rebuild.rebuild` (its module doc tells how, and why a
partition a worker keeps committing to is left as it was: exit status 1). ``--dry-run`` only
prints. A standalone Redis only (``redis+cluster://`` URLs are refused).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.cli.servers import UnavailableError, redis_connected
from stream.redis_rebuild import rebuild
from stream.settings import Settings, SettingsError, mask_url

DESCRIPTION = """\
Rebuild the membership keys (segment member sets, customer versions, segment sizes) from the
stored customer states, which are the truth, one partition at a time in an optimistic
transaction. A standalone Redis only (redis+cluster:// URLs are refused).

exit status: 0 done; 1 a partition kept changing under the workers' commits and was left as
it was (retry when the load is low); 2 bad command line or settings; 69 Redis cannot be
reached or refuses the credentials.
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``redis-rebuild`` sub-command."""
    parser = subparsers.add_parser(
        "redis-rebuild",
        help="rebuild membership keys (segment sets, customer versions, sizes) from states",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "--partitions",
        default="",
        help="partitions to rebuild, e.g. `0,3,5-7` (default: all SEGSTREAM_BUNDLE_PARTITIONS)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the differences, write nothing"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="attempts per partition when workers commit meanwhile (default 5)",
    )
    parser.set_defaults(func=run)


def parse_partitions(text: str, count: int) -> list[int]:
    """``"0,3,5-7"`` -> [0, 3, 5, 6, 7] (all of ``range(count)`` when empty).

    >>> parse_partitions("0,3,5-7", 8), parse_partitions("", 3)
    ([0, 3, 5, 6, 7], [0, 1, 2])
    """
    if not text.strip():
        return list(range(count))
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--partitions: {part.strip()!r} is not N or N-M") from None
        if not 0 <= a <= b < count:
            raise ValueError(f"--partitions: {part.strip()!r} is outside 0-{count - 1}")
        out.update(range(a, b + 1))
    return sorted(out)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        partitions = parse_partitions(args.partitions, settings.topics.bundle_partitions)
    except (SettingsError, ValueError) as exc:
        print(f"segstream redis-rebuild: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        client = await redis_connected(settings, "redis-rebuild")  # or UnavailableError
        await client.aclose()
        return await rebuild(settings, partitions, dry_run=args.dry_run, retries=args.retries)

    try:
        return asyncio.run(main())
    except AuthenticationError as exc:  # its text never holds the password
        raise UnavailableError(f"Redis at {mask_url(settings.redis.url)} refused the "
                               f"credentials: {type(exc).__name__}: {exc}") from None
    except (RedisConnectionError, RedisTimeoutError) as exc:  # lost after the first PING
        raise UnavailableError(
            f"Redis at {mask_url(settings.redis.url)} cannot be reached: {type(exc).__name__}"
        ) from None
    except RedisError as exc:  # e.g. AuthenticationError: its text never holds the password
        raise UnavailableError(
            f"Redis at {mask_url(settings.redis.url)}: {type(exc).__name__}: {exc}"
        ) from None
