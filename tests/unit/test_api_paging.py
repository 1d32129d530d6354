"""Member paging of the API (stream.worker.api): cursor text, and walks that lose no member."""

from __future__ import annotations

import asyncio
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.store import Commit, MemberOp, MemoryStore
from stream.worker.api import ApiError, Cursor, decode_cursor, encode_cursor, page_members


@given(st.text(min_size=1, max_size=40), st.integers(0, 7), st.integers(0, 2**64 - 1),
       st.one_of(st.none(), st.text(max_size=40)))
def test_cursor_round_trip(segment: str, p: int, scan: int, after: str | None) -> None:
    cursor = Cursor(p, 0 if after is not None else scan, after)
    text = encode_cursor(segment, cursor)
    assert text.isascii() and "=" not in text and "/" not in text and "+" not in text
    assert decode_cursor(segment, text, partitions=8) == cursor


@pytest.mark.parametrize("text", ["", "!!!", "bm90IGpzb24", encode_cursor("vip", Cursor(8, 0)),
                                  "WzIsInZpcCIsMCwwLG51bGxd"])  # the last: format version 2
def test_foreign_cursors_are_400(text: str) -> None:
    with pytest.raises(ApiError) as err:
        decode_cursor("vip", text, partitions=8)
    assert (err.value.status, err.value.code) == (400, "invalid_cursor")


def test_a_cursor_of_another_segment_is_refused() -> None:
    with pytest.raises(ApiError, match="another segment"):
        decode_cursor("other", encode_cursor("vip", Cursor(1, 5)), partitions=8)


class BucketStore:
    """A Redis-like SSCAN: members hashed into a fixed bucket table, a step visits ``count``
    buckets (so a step may hold more or fewer members than asked). ``on_step`` runs before
    each step (concurrent changes)."""

    def __init__(self, partitions: int, buckets: int) -> None:
        self.sets: list[set[str]] = [set() for _ in range(partitions)]
        self.buckets = buckets
        self.on_step = lambda: None

    async def scan_members(self, partition: int, segment: str, cursor: int,
                           count: int) -> tuple[int, list[str]]:
        self.on_step()
        end = min(self.buckets, cursor + max(1, count // 2))
        out = [m for m in self.sets[partition]
               if cursor <= zlib.crc32(m.encode()) % self.buckets < end]
        return (0 if end == self.buckets else end), out


async def walk(store: object, partitions: int, limit: int) -> tuple[list[str], list[int]]:
    members: list[str] = []
    sizes: list[int] = []
    cursor: Cursor | None = Cursor()
    while cursor is not None:
        page, cursor = await page_members(store, "seg", partitions, cursor, limit)  # type: ignore[arg-type]
        members += page
        sizes.append(len(page))
        assert len(sizes) < 10_000, "the walk must end"
    return members, sizes


@pytest.mark.parametrize("limit", [1, 3, 10, 1000])
def test_memory_store_walk_cuts_whole_sets_by_name(limit: int) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        expected = set()
        for p in range(3):
            ep = await store.claim(p)
            ids = [f"p{p}-c{i}" for i in range(p * 7)]  # 0, 7 and 14 members
            expected |= set(ids)
            await store.commit(Commit(p, ep, members=[MemberOp(c, "seg", 1) for c in ids]))
        members, sizes = await walk(store, 3, limit)
        assert sorted(members) == sorted(expected)  # each exactly once when nothing changes
        assert max(sizes) <= limit

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(20))
def test_walk_under_concurrent_changes_returns_every_stable_member(seed: int) -> None:
    rng = random.Random(seed)
    partitions = 4
    store = BucketStore(partitions, buckets=rng.choice([1, 8, 64]))
    stable = {f"s{i}" for i in range(rng.randrange(0, 300))}
    for m in stable:
        store.sets[rng.randrange(partitions)].add(m)
    churn: list[tuple[int, str]] = []
    ever = set(stable)

    def mutate() -> None:  # others come and go while the walk runs
        for _ in range(rng.randrange(4)):
            if churn and rng.random() < 0.5:
                p, m = churn.pop(rng.randrange(len(churn)))
                store.sets[p].discard(m)
            else:
                p, m = rng.randrange(partitions), f"t{rng.randrange(10**6)}"
                store.sets[p].add(m)
                churn.append((p, m))
                ever.add(m)

    store.on_step = mutate
    limit = rng.choice([1, 5, 50])
    members, sizes = asyncio.run(walk(store, partitions, limit))
    assert stable <= set(members)
    assert set(members) <= ever  # nothing invented
    if store.buckets == 1:  # every step is the whole set: pages never exceed the limit
        assert max(sizes) <= limit
