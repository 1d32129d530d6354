"""Rebuild membership keys from the stored customer states (``segstream redis-rebuild``).

The customer states (``NS{pP}:state``) are the truth: each one carries, per segment, the
version of the customer's last change (odd: member). From them :func:`rebuild` recomputes, per
partition, the membership keys that the worker's commit script keeps beside them
(``NS{pP}:m:SEG`` sets, ``NS{pP}:c:CID`` hashes, ``NS{pP}:sizes``), prints the differences and
writes the corrections.

Each partition is rebuilt in one optimistic transaction: ``WATCH`` on the partition's state
hash, epoch and offset, read everything, ``MULTI`` with the corrections, ``EXEC``. Every worker
commit that changes membership also writes the state hash, so a commit that lands meanwhile
aborts the transaction, which is retried (``retries``); a partition that keeps changing is
reported and left as it was (exit status 1): stop the segmentation agents, or retry when the
load is low. ``dry_run`` only prints. A standalone Redis only (``redis+cluster://`` and
``rediss+cluster://`` URLs are refused: WATCH across a cluster pipeline is not supported by the
client here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from state.codec import CodecError, decode_state
from state.redis_store import RedisStore
from stream.connections import redis_for
from stream.settings import Settings

_GLOB_SPECIAL = "*?[]\\"
_CHUNK = 1000


@dataclass
class Report:
    """What a partition's rebuild found (and, unless dry, corrected)."""

    partition: int
    states: int = 0
    undecodable: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)  # segment -> members added
    removed: dict[str, int] = field(default_factory=dict)
    rewritten: int = 0  # c:CID hashes rewritten
    stale: int = 0  # c:CID hashes of customers without a state, deleted
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # seg -> (old, new)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.rewritten or self.stale or self.sizes)

    def lines(self) -> list[str]:
        head = f"partition {self.partition}: {self.states} states"
        if self.undecodable:
            head += (f", {len(self.undecodable)} undecodable (left alone: "
                     f"{', '.join(self.undecodable[:5])})")
        if not self.changed:
            return [head + ", membership consistent"]
        out = [head]
        out.extend(f"  m:{seg}: +{self.added.get(seg, 0)} -{self.removed.get(seg, 0)}"
                   for seg in sorted(set(self.added) | set(self.removed)))
        if self.rewritten or self.stale:
            out.append(f"  c: {self.rewritten} customer hash(es) rewritten, {self.stale} stale "
                       "deleted")
        for seg, (old, new) in sorted(self.sizes.items()):
            out.append(f"  sizes[{seg}]: {old} -> {new}")
        return out


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def _desired(client: Redis, store: RedisStore, p: int, report: Report
                   ) -> dict[str, dict[str, int]]:
    """Customer -> segment -> version, from the partition's states."""
    versions: dict[str, dict[str, int]] = {}
    async for cid_raw, blob in client.hscan_iter(store.key(p, "state"), count=_CHUNK):
        cid = _text(cid_raw)
        report.states += 1
        try:
            v = decode_state(blob).all_versions()
        except CodecError:
            report.undecodable.append(cid)
            continue
        if v:
            versions[cid] = v
    return versions


@dataclass
class Stored:
    """A partition's membership keys as stored."""

    members: dict[str, set[str]]  # segment -> members (m:SEG)
    versions: dict[str, dict[str, int]]  # customer -> segment -> version (c:CID)
    sizes: dict[str, int]


async def _actual(client: Redis, store: RedisStore, p: int) -> Stored:
    m_prefix, c_prefix = store.key(p, "m:"), store.key(p, "c:")
    pattern = _escape(store.key(p, "")) + "*"
    m_keys: list[str] = []
    c_keys: list[str] = []
    async for raw in client.scan_iter(match=pattern, count=_CHUNK):
        key = _text(raw)
        if key.startswith(m_prefix):
            m_keys.append(key)
        elif key.startswith(c_prefix):
            c_keys.append(key)
    members: dict[str, set[str]] = {}
    versions: dict[str, dict[str, int]] = {}
    async with client.pipeline(transaction=False) as pipe:
        for k in m_keys:
            pipe.smembers(k)
        for k in c_keys:
            pipe.hgetall(k)
        pipe.hgetall(store.key(p, "sizes"))
        results = await pipe.execute()
    for k, got in zip(m_keys, results, strict=False):
        members[k[len(m_prefix):]] = {_text(m) for m in got}
    for k, got in zip(c_keys, results[len(m_keys):], strict=False):
        versions[k[len(c_prefix):]] = {_text(s): int(v) for s, v in got.items()}
    sizes = {_text(s): int(n) for s, n in results[-1].items()}
    return Stored(members, versions, sizes)


def _queue_fixes(pipe: Any, store: RedisStore, desired: dict[str, dict[str, int]],
                 stored: Stored, report: Report) -> None:
    """Queue on ``pipe`` the writes that turn ``stored`` into what ``desired`` implies:
    membership sets, then per-customer versions, then the size hash."""
    want_members: dict[str, set[str]] = defaultdict(set)
    for cid, v in desired.items():
        for seg, ver in v.items():
            if ver % 2:
                want_members[seg].add(cid)
    _queue_members(pipe, store, want_members, stored.members, report)
    _queue_versions(pipe, store, desired, stored.versions, report)
    _queue_sizes(pipe, store, want_members, stored.sizes, report)


def _queue_members(pipe: Any, store: RedisStore, want_members: dict[str, set[str]],
                   members: dict[str, set[str]], report: Report) -> None:
    p = report.partition
    for seg in sorted(set(want_members) | set(members)):
        key = store.key(p, f"m:{seg}")
        add = sorted(want_members.get(seg, set()) - members.get(seg, set()))
        rem = sorted(members.get(seg, set()) - want_members.get(seg, set()))
        if add:
            report.added[seg] = len(add)
        if rem:
            report.removed[seg] = len(rem)
        for i in range(0, len(add), _CHUNK):
            pipe.sadd(key, *add[i:i + _CHUNK])
        for i in range(0, len(rem), _CHUNK):
            pipe.srem(key, *rem[i:i + _CHUNK])


def _queue_versions(pipe: Any, store: RedisStore, desired: dict[str, dict[str, int]],
                    versions: dict[str, dict[str, int]], report: Report) -> None:
    p = report.partition
    for cid, v in desired.items():
        if versions.get(cid) != v:
            report.rewritten += 1
            pipe.delete(store.key(p, f"c:{cid}"))
            pipe.hset(store.key(p, f"c:{cid}"), mapping=v)
    for cid in versions.keys() - desired.keys():
        report.stale += 1
        pipe.delete(store.key(p, f"c:{cid}"))


def _queue_sizes(pipe: Any, store: RedisStore, want_members: dict[str, set[str]],
                 sizes: dict[str, int], report: Report) -> None:
    p = report.partition
    want_sizes = {seg: len(m) for seg, m in want_members.items() if m}
    current = {seg: n for seg, n in sizes.items() if n}
    if want_sizes != current:
        for seg in set(want_sizes) | set(current):
            if want_sizes.get(seg, 0) != current.get(seg, 0):
                report.sizes[seg] = (current.get(seg, 0), want_sizes.get(seg, 0))
        pipe.delete(store.key(p, "sizes"))
        if want_sizes:
            pipe.hset(store.key(p, "sizes"), mapping=want_sizes)


async def rebuild_partition(client: Redis, store: RedisStore, p: int, *, dry_run: bool = False,
                            retries: int = 5) -> Report | None:
    """Rebuild partition ``p``'s membership keys; None if it kept changing ``retries`` times."""
    watched = [store.key(p, "state"), store.key(p, "epoch"), store.key(p, "offset")]
    for _ in range(max(1, retries)):
        report = Report(p)
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(*watched)
            desired = await _desired(client, store, p, report)
            stored = await _actual(client, store, p)
            # redis-py's asyncio Pipeline.multi/reset carry no annotations (redis 8.1)
            pipe.multi()  # type: ignore[no-untyped-call]
            _queue_fixes(pipe, store, desired, stored, report)
            if dry_run or not report.changed:
                await pipe.reset()  # type: ignore[no-untyped-call]  # unannotated, as above
                return report
            try:
                await pipe.execute()
            except WatchError:
                continue
            return report
    return None


async def rebuild(settings: Settings, partitions: list[int], *, dry_run: bool = False,
                  retries: int = 5, out: Any = print) -> int:
    """Rebuild ``partitions``; prints a report per partition; the exit status."""
    if settings.redis.url.startswith(("redis+cluster://", "rediss+cluster://")):
        out("redis-rebuild: Redis Cluster URLs are not supported (see --help)")
        return 2
    client = redis_for(settings)
    assert isinstance(client, Redis), "a standalone URL gives a standalone client"
    status = 0
    try:
        store = RedisStore(client, namespace=settings.redis.namespace)
        for p in partitions:
            report = await rebuild_partition(client, store, p, dry_run=dry_run, retries=retries)
            if report is None:
                out(f"partition {p}: kept changing during {retries} attempts (a worker is "
                    "committing to it); nothing written: stop the segmentation agents or retry")
                status = 1
                continue
            for line in report.lines():
                out(line)
            if report.changed and dry_run:
                out(f"  (dry run: partition {p} not written)")
    finally:
        await client.aclose()
    return status
