"""One contract, two stores: MemoryStore and RedisStore (on the real Redis) behave the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from state.redis_store import RedisStore
from state.store import Commit, CommitResult, MemberOp, MemoryStore, StateStore

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Awaitable[StateStore]]]:
    """A factory (so the Redis client is created inside the test's own event loop)."""
    if request.param == "memory":
        mem = MemoryStore()

        async def memory() -> StateStore:
            return mem

        yield memory
        return
    url = request.getfixturevalue("redis_url")
    namespace = f"test-{uuid.uuid4().hex[:8]}:"

    async def redis_store() -> StateStore:
        return RedisStore(Redis.from_url(url), namespace=namespace)

    yield redis_store


def test_commit_load_due_and_offsets(make_store: Callable[[], Awaitable[StateStore]]) -> None:
    async def scenario() -> None:
        store = await make_store()
        assert await store.applied_offset(3) is None
        epoch = await store.claim(3)
        first = Commit(
            partition=3,
            epoch=epoch,
            offset=10,
            states={"alice": b"\x01state-a", "bob": b"state-b"},
            due={"alice": 5_000, "bob": 1_000},
            members=[MemberOp("alice", "engaged_30d", 1), MemberOp("bob", "engaged_30d", 1)],
        )
        assert await store.commit(first) is CommitResult.APPLIED
        assert await store.applied_offset(3) == 10
        assert await store.load(3, ["alice", "carol", "bob"]) == [b"\x01state-a", None, b"state-b"]
        assert await store.due(3, 4_999, 10) == [("bob", 1_000)]
        assert await store.due(3, 10_000, 1) == [("bob", 1_000)]
        assert await store.due_count(3, 4_999) == 1
        assert await store.due_count(3, 5_000) == 2
        assert await store.sizes([3]) == {"engaged_30d": 2}

        # the same bundle again (re-delivery) changes nothing
        again = Commit(partition=3, epoch=epoch, offset=10, states={"alice": b"other"})
        assert await store.commit(again) is CommitResult.ALREADY_APPLIED
        assert await store.load(3, ["alice"]) == [b"\x01state-a"]

        # a timer pass (no offset): bob exits, nothing more is due for him
        timer = Commit(
            partition=3,
            epoch=epoch,
            states={"bob": b"state-b2"},
            due={"bob": None},
            members=[MemberOp("bob", "engaged_30d", 2)],
        )
        assert await store.commit(timer) is CommitResult.APPLIED
        assert await store.due(3, 10_000, 10) == [("alice", 5_000)]
        assert await store.sizes([3]) == {"engaged_30d": 1}
        assert await store.segments_of(3, "bob") == {}
        assert await store.segments_of(3, "alice") == {"engaged_30d": 1}

    run(scenario())


def test_versions_never_regress_and_repeats_keep_sizes_exact(
    make_store: Callable[[], Awaitable[StateStore]],
) -> None:
    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(0)
        ops = [MemberOp("c1", "s", 1), MemberOp("c1", "s", 2), MemberOp("c1", "s", 3)]
        assert await store.commit(Commit(0, epoch, members=ops)) is CommitResult.APPLIED
        # stale or repeated versions (older EXIT, same ENTER) do nothing
        stale = [MemberOp("c1", "s", 2), MemberOp("c1", "s", 3), MemberOp("c1", "s", 1)]
        assert await store.commit(Commit(0, epoch, members=stale)) is CommitResult.APPLIED
        assert await store.segments_of(0, "c1") == {"s": 3}
        assert await store.sizes([0]) == {"s": 1}

    run(scenario())


def test_a_zombie_owner_is_fenced(make_store: Callable[[], Awaitable[StateStore]]) -> None:
    async def scenario() -> None:
        store = await make_store()
        old = await store.claim(1)
        new = await store.claim(1)
        assert new > old
        zombie = Commit(partition=1, epoch=old, offset=5, states={"x": b"stale"})
        assert await store.commit(zombie) is CommitResult.FENCED
        assert await store.load(1, ["x"]) == [None]
        assert await store.applied_offset(1) is None
        owner = Commit(partition=1, epoch=new, offset=5, states={"x": b"fresh"})
        assert await store.commit(owner) is CommitResult.APPLIED

    run(scenario())


def test_forget_erases_state_due_and_membership(
    make_store: Callable[[], Awaitable[StateStore]],
) -> None:
    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(2)
        await store.commit(
            Commit(
                2,
                epoch,
                offset=1,
                states={"gone": b"s"},
                due={"gone": 100},
                members=[MemberOp("gone", "a", 1), MemberOp("gone", "b", 1)],
            )
        )
        # forget: the engine's EXITs for every segment, then the erasure
        exits = [MemberOp("gone", "a", 2), MemberOp("gone", "b", 2)]
        await store.commit(Commit(2, epoch, offset=2, members=exits, forgotten=["gone"]))
        assert await store.load(2, ["gone"]) == [None]
        assert await store.due(2, 1_000, 10) == []
        assert await store.segments_of(2, "gone") == {}
        assert await store.sizes([2]) == {}

    run(scenario())


def test_large_commit_is_chunked(make_store: Callable[[], Awaitable[StateStore]]) -> None:
    """More fields than one Lua ``unpack`` takes (~8k) still commit in one atomic script."""

    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(4)
        states = {f"c{i}": f"v{i}".encode() for i in range(6_000)}
        due: dict[str, int | None] = {f"c{i}": i for i in range(6_000)}
        commit = Commit(4, epoch, offset=0, states=states, due=due)
        assert await store.commit(commit) is CommitResult.APPLIED
        assert await store.load(4, ["c0", "c5999"]) == [b"v0", b"v5999"]
        assert len(await store.due(4, 10**9, 10_000)) == 6_000

    run(scenario())


def test_packed_commit_round_trips_any_bytes_and_names(
        make_store: Callable[[], Awaitable[StateStore]]) -> None:
    """The commit travels as one msgpack payload: blobs with every byte value (NUL, 0xff,
    invalid UTF-8), long blobs, non-ASCII ids and segment names, large versions and instants,
    forgets and erasures come out of the script exactly as they went in."""

    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(6)
        blobs = {"bin": bytes(range(256)) * 3, "long": b"\x00\xff" * 40_000, "empty": b"",
                 "é-客户": "ünïcode".encode() + b"\xc3"}
        big_due = 4_102_444_800_123  # year 2100, in ms: beyond 32 bits
        commit = Commit(6, epoch, offset=2**40, states=blobs,
                        due={"bin": big_due, "long": 1, "empty": None, "é-客户": 7},
                        members=[MemberOp("é-客户", "ségment ✓", 1),
                                 MemberOp("bin", "s", 2**31 + 1),
                                 MemberOp("long", "s", 1)],
                        aliases={"anon-ü": "é-客户"}, erasures={"gone": big_due})
        assert await store.commit(commit) is CommitResult.APPLIED
        assert await store.applied_offset(6) == 2**40
        assert await store.load(6, list(blobs)) == list(blobs.values())
        assert await store.due(6, 10**15, 10) == [("long", 1), ("é-客户", 7), ("bin", big_due)]
        assert await store.segments_of(6, "é-客户") == {"ségment ✓": 1}
        assert await store.segments_of(6, "bin") == {"s": 2**31 + 1}
        assert await store.sizes([6]) == {"ségment ✓": 1, "s": 2}
        assert await store.aliases(6, ["anon-ü", "x"]) == ["é-客户", None]
        assert await store.erasures(6) == {"gone": big_due}
        # a forget: its EXITs (as the engine emits them), then the erasure
        again = Commit(6, epoch, offset=2**40 + 1, forgotten=["é-客户"],
                       members=[MemberOp("é-客户", "ségment ✓", 2),
                                MemberOp("bin", "s", 2**31 + 2)])
        assert await store.commit(again) is CommitResult.APPLIED
        assert await store.load(6, ["é-客户"]) == [None]
        assert await store.segments_of(6, "é-客户") == {}
        assert await store.sizes([6]) == {"s": 1}
        assert await store.due(6, 10**15, 10) == [("long", 1), ("bin", big_due)]
        assert not await store.has_state(6, "é-客户")

    run(scenario())


def test_redis_commit_sends_few_arguments_whatever_its_size() -> None:
    """A 3,000-customer commit is 7 keys and 4 arguments (was ~6 arguments per customer:
    packing them dominated the client's cost); every key carries the partition's hash tag."""
    store = RedisStore(Redis(), namespace="ns:")
    commit = Commit(5, 1, offset=9, states={f"c{i}": b"s" for i in range(3_000)},
                    due={f"c{i}": i for i in range(3_000)},
                    members=[MemberOp(f"c{i}", "seg", 1) for i in range(3_000)])
    keys, args = store.commit_call(commit)
    assert len(keys) == 7 and len(args) == 4
    assert all(k.startswith("ns:{p5}:") for k in keys)


def test_redis_keys_share_one_slot_per_partition() -> None:
    """Every key of a partition carries the same hash tag, so a commit is single-slot."""
    store = RedisStore(Redis(), namespace="ns:")
    keys = [store.key(7, s) for s in ("epoch", "offset", "state", "due", "sizes", "m:x", "c:y")]
    assert all(k.startswith("ns:{p7}:") for k in keys)
    with pytest.raises(ValueError, match="braces"):
        RedisStore(Redis(), namespace="{bad}")


def test_has_state_and_member_scan(make_store: Callable[[], Awaitable[StateStore]]) -> None:
    """The API's read-only queries: a walk of SSCAN steps returns every member exactly once
    when nothing changes (300 members: a Redis hashtable set, walked in several steps)."""

    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(5)
        ids = [f"m{i:03d}" for i in range(300)]
        ops = [MemberOp(cid, "big", 1) for cid in ids] + [MemberOp("m000", "small", 1)]
        await store.commit(Commit(5, epoch, offset=0, states={"m000": b"s"}, members=ops))
        assert await store.has_state(5, "m000")
        assert not await store.has_state(5, "m001")  # a member without state: not "known"
        assert not await store.has_state(6, "m000")
        seen: list[str] = []
        cursor, steps = 0, 0
        while True:
            cursor, batch = await store.scan_members(5, "big", cursor, 50)
            seen += batch
            steps += 1
            if cursor == 0:
                break
        assert sorted(set(seen)) == ids
        assert await store.scan_members(5, "small", 0, 50) == (0, ["m000"])
        assert await store.scan_members(5, "nobody", 0, 50) == (0, [])
        assert await store.scan_members(4, "big", 0, 50) == (0, [])

    run(scenario())


def test_alias_links_are_committed_and_read_back(
    make_store: Callable[[], Awaitable[StateStore]],
) -> None:
    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(5)
        assert await store.aliases(5, ["anon-1"]) == [None]
        commit = Commit(5, epoch, offset=0, aliases={"anon-1": "cust-1", "anon-2": "cust-2"},
                        forgotten=["anon-1"])
        assert await store.commit(commit) is CommitResult.APPLIED
        assert await store.aliases(5, ["anon-2", "x", "anon-1"]) == ["cust-2", None, "cust-1"]
        assert await store.aliases(5, []) == []

    run(scenario())


def test_states_scan_and_definitions_version(
    make_store: Callable[[], Awaitable[StateStore]],
) -> None:
    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(6)
        states = {f"c{i}": f"s{i}".encode() for i in range(300)}
        await store.commit(Commit(6, epoch, offset=0, states=states))
        seen: dict[str, bytes] = {}
        cursor = 0
        while True:
            cursor, rows = await store.scan_states(6, cursor, 50)
            seen.update(rows)
            if cursor == 0:
                break
        assert seen == states
        assert await store.definitions_version(6) is None
        await store.mark_definitions(6, "v2")
        assert await store.definitions_version(6) == "v2"

    run(scenario())


def test_erasures_are_kept_then_pruned(make_store: Callable[[], Awaitable[StateStore]]) -> None:
    async def scenario() -> None:
        store = await make_store()
        epoch = await store.claim(7)
        await store.commit(Commit(7, epoch, offset=0, erasures={"a": 100, "b": 200}))
        assert await store.erasures(7) == {"a": 100, "b": 200}
        await store.commit(Commit(7, epoch, offset=1, prune_erasures_before=150))
        assert await store.erasures(7) == {"b": 200}

    run(scenario())
