"""Redis implementation of :class:`state.store.StateStore`.

Key layout (``P`` = partition of the bundle topic, ``NS`` = configurable namespace). Every key
of a partition carries the hash tag ``{pP}``, so a partition's commit touches one slot and the
same code runs on Redis Cluster:

=====================  ======  ========================================================
key                    type    holds
=====================  ======  ========================================================
``NS{pP}:epoch``       string  ownership epoch; a claim increments it (fencing)
``NS{pP}:offset``      string  last bundle offset applied
``NS{pP}:state``       hash    customer id -> encoded state (``state.codec``)
``NS{pP}:due``         zset    customer id -> next due instant (ms)
``NS{pP}:sizes``       hash    segment -> number of members in this partition
``NS{pP}:m:SEG``       set     members of segment SEG in this partition
``NS{pP}:c:CUSTOMER``  hash    segment -> last version seen (odd: member)
``NS{pP}:alias``       hash    anonymous id -> customer id it was aliased to
``NS{pP}:forgotten``   zset    customer id -> event time of its last ``forget`` (kept for the
                               allowed lateness: later-arriving older events are erased too)
``NS{pP}:definitions`` string  definitions version the partition's states are evaluated with
=====================  ======  ========================================================

A commit is one Lua script (atomic, one round trip): it checks the epoch (a zombie owner is
refused), skips an offset already applied (a re-delivered bundle), writes all states with one
``HSET``, the due index with one ``ZADD``/``ZREM``, and membership guarded by version (an older
version never regresses it; SADD/SREM results keep sizes exact under repeats). Its arguments
are few whatever the commit's size: the partition's 7 fixed keys, the epoch, the offset, the
erasure horizon and one msgpack payload (:func:`pack_commit`, unpacked by Redis's built-in
``cmsgpack``); the per-segment and per-customer keys are built inside the script from the
partition's prefix ``NS{pP}:``, so they share the slot of the declared keys (Redis Cluster).
"""

from __future__ import annotations

from itertools import chain
from typing import Any, cast

import msgpack
from redis.asyncio import Redis, RedisCluster

from state.store import Commit, CommitResult

_COMMIT_LUA = """
local ep = redis.call('GET', KEYS[1])
if ep ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' then
  local cur = redis.call('GET', KEYS[2])
  if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
  redis.call('SET', KEYS[2], ARGV[2])
end
local d = cmsgpack.unpack(ARGV[4])
-- KEYS[1] is NS{pP}:epoch: the partition's prefix, hash tag included, for the keys named
-- after segments and customers (same slot as every declared key)
local prefix = string.sub(KEYS[1], 1, -6)
local function bulk(cmd, key, list)
  local n = #list
  for s = 1, n, 4000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 3999, n)))
  end
end
bulk('HSET', KEYS[3], d[1])
bulk('ZADD', KEYS[4], d[2])
bulk('ZREM', KEYS[4], d[3])
local m = d[4]
for k = 1, #m, 3 do
  local cid, seg, v = m[k], m[k + 1], m[k + 2]
  local custkey = prefix .. 'c:' .. cid
  local old = tonumber(redis.call('HGET', custkey, seg) or '0')
  if v > old then
    redis.call('HSET', custkey, seg, v)
    local n
    if v % 2 == 1 then
      n = redis.call('SADD', prefix .. 'm:' .. seg, cid)
    else
      n = -redis.call('SREM', prefix .. 'm:' .. seg, cid)
    end
    if n ~= 0 then redis.call('HINCRBY', KEYS[5], seg, n) end
  end
end
for _, cid in ipairs(d[5]) do
  redis.call('HDEL', KEYS[3], cid)
  redis.call('ZREM', KEYS[4], cid)
  redis.call('DEL', prefix .. 'c:' .. cid)
end
bulk('HSET', KEYS[6], d[6])
bulk('ZADD', KEYS[7], d[7])
if ARGV[3] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[3]) end
return 1
"""

def pack_commit(commit: Commit) -> bytes:
    """The commit script's payload: one msgpack array (unpacked by Redis's ``cmsgpack``) of
    flat lists: states (id, blob, ...), due (instant, id, ...), due removals (id, ...),
    membership (id, segment, version, ...), forgotten (id, ...), aliases (anonymous id,
    customer id, ...), erasures (time, id, ...). One argument instead of ~6 per customer:
    the client packs a few arguments per commit, not thousands. Old-spec raw strings
    (``use_bin_type=False``): Redis's ``cmsgpack`` refuses msgpack's bin type; the blobs come
    out as the same bytes."""
    due = commit.due
    return cast(bytes, msgpack.packb([
        list(chain.from_iterable(commit.states.items())),
        [x for cid, at in due.items() if at is not None for x in (at, cid)],
        [cid for cid, at in due.items() if at is None],
        [x for op in commit.members for x in (op.customer_id, op.segment, op.version)],
        commit.forgotten,
        list(chain.from_iterable(commit.aliases.items())),
        [x for cid, at in commit.erasures.items() for x in (at, cid)],
    ], use_bin_type=False))


_CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def redis_client(url: str, *, username: str | None = None, password: str | None = None,
                 ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None, ssl_check_hostname: bool | None = None
                 ) -> Redis | RedisCluster:
    """A client for ``url`` (the one place Redis clients are made).

    ``redis+cluster://host:port`` means a Redis Cluster (any node), ``rediss://`` and
    ``rediss+cluster://`` TLS. Credentials come from the URL (``redis://user:pw@host``) or from
    ``username``/``password`` (a password in the URL wins); the ``ssl_*`` options apply to TLS
    URLs only (``ValueError`` otherwise). Nothing here puts the URL or a password into an error.
    """
    options: dict[str, Any] = {}
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    tls = {k: v for k, v in zip(_TLS_OPTIONS, (ssl_ca_certs, ssl_certfile, ssl_keyfile,
                                                ssl_check_hostname), strict=True)
           if v is not None}
    for prefix, plain in _CLUSTER_SCHEMES.items():
        if url.startswith(prefix):
            url, cluster = plain + url.removeprefix(prefix), True
            break
    else:
        cluster = False
    if tls:
        if not url.startswith("rediss://"):
            raise ValueError("TLS options need a rediss:// (or rediss+cluster://) Redis URL")
        options.update(tls)
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


class RedisStore:
    """:class:`state.store.StateStore` on a Redis server or a Redis Cluster (``RedisCluster``:
    a partition's keys share one hash tag, so the commit script runs on that slot's node;
    tests/integration/test_redis_cluster.py runs the store contract and the worker on one)."""

    def __init__(self, client: Redis | RedisCluster, namespace: str = "segstream:") -> None:
        if "{" in namespace or "}" in namespace:
            raise ValueError(f"namespace {namespace!r} must not contain braces (hash tags)")
        self._r = client
        self._ns = namespace
        self._commit = client.register_script(_COMMIT_LUA)

    def key(self, partition: int, suffix: str) -> str:
        """The key ``suffix`` of ``partition``, e.g. ``key(3, "state")`` -> ``NS{p3}:state``."""
        return f"{self._ns}{{p{partition}}}:{suffix}"

    async def claim(self, partition: int) -> int:
        return int(await self._r.incr(self.key(partition, "epoch")))

    async def applied_offset(self, partition: int) -> int | None:
        raw = await self._r.get(self.key(partition, "offset"))
        return None if raw is None else int(raw)

    async def load(self, partition: int, customer_ids: list[str]) -> list[bytes | None]:
        if not customer_ids:
            return []
        # the client is made without decode_responses: values are bytes
        values = await self._r.hmget(self.key(partition, "state"), customer_ids)
        return cast("list[bytes | None]", values)

    async def due(self, partition: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        rows = cast(
            "list[tuple[bytes, float]]",
            await self._r.zrangebyscore(
                self.key(partition, "due"), "-inf", upto_ms, start=0, num=limit, withscores=True
            ),
        )
        return [(_text(cid), int(score)) for cid, score in rows]

    async def aliases(self, partition: int, anonymous_ids: list[str]) -> list[str | None]:
        if not anonymous_ids:
            return []
        raw = await self._r.hmget(self.key(partition, "alias"), anonymous_ids)
        return [None if v is None else _text(v) for v in raw]

    async def erasures(self, partition: int) -> dict[str, int]:
        rows = cast("list[tuple[bytes, float]]", await self._r.zrange(
            self.key(partition, "forgotten"), 0, -1, withscores=True))
        return {_text(cid): int(at) for cid, at in rows}

    async def due_count(self, partition: int, upto_ms: int) -> int:
        return int(await self._r.zcount(self.key(partition, "due"), "-inf", upto_ms))

    def commit_call(self, commit: Commit) -> tuple[list[str], list[Any]]:
        """The commit script's keys and arguments: the partition's 7 fixed keys (one hash tag:
        one slot), and epoch, offset, erasure horizon and the :func:`pack_commit` payload."""
        p = commit.partition
        keys = [self.key(p, k) for k in ("epoch", "offset", "state", "due", "sizes", "alias",
                                          "forgotten")]
        args: list[Any] = [
            commit.epoch,
            "" if commit.offset is None else commit.offset,
            "" if commit.prune_erasures_before is None else commit.prune_erasures_before,
            pack_commit(commit),
        ]
        return keys, args

    async def commit(self, commit: Commit) -> CommitResult:
        keys, args = self.commit_call(commit)
        result = await self._commit(keys=keys, args=args)
        return CommitResult(int(result))

    async def segments_of(self, partition: int, customer_id: str) -> dict[str, int]:
        raw = await self._r.hgetall(self.key(partition, f"c:{customer_id}"))
        versions = {_text(seg): int(ver) for seg, ver in raw.items()}
        return {seg: ver for seg, ver in versions.items() if ver % 2}

    async def sizes(self, partitions: list[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        async with self._r.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.hgetall(self.key(p, "sizes"))
            for raw in await pipe.execute():
                for seg, n in raw.items():
                    name = _text(seg)
                    out[name] = out.get(name, 0) + int(n)
        return {seg: n for seg, n in out.items() if n}

    async def scan_states(self, partition: int, cursor: int,
                          count: int) -> tuple[int, list[tuple[str, bytes]]]:
        nxt, raw = await self._r.hscan(self.key(partition, "state"), cursor, count=count)
        fields = cast("dict[bytes, bytes]", raw)  # no decode_responses: bytes both sides
        return int(nxt), [(_text(cid), blob) for cid, blob in fields.items()]

    async def definitions_version(self, partition: int) -> str | None:
        raw = await self._r.get(self.key(partition, "definitions"))
        return None if raw is None else _text(raw)

    async def mark_definitions(self, partition: int, version: str) -> None:
        await self._r.set(self.key(partition, "definitions"), version)

    async def has_state(self, partition: int, customer_id: str) -> bool:
        return bool(await self._r.hexists(self.key(partition, "state"), customer_id))

    async def scan_members(self, partition: int, segment: str, cursor: int,
                           count: int) -> tuple[int, list[str]]:
        nxt, raw = await self._r.sscan(self.key(partition, f"m:{segment}"), cursor, count=count)
        return int(nxt), [_text(m) for m in raw]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
