"""Customer-state store contract, and the in-memory store used by tests and offline tools.

A store keeps, per partition of the bundle topic: the encoded state of each customer (opaque
bytes from ``state.codec``), the due index (customer -> next instant at which membership can
change with no new event), the bundle offset applied last, and membership (per segment the set
of members, per customer segment -> version, and segment sizes).

Everything a bundle or a timer pass changes in one partition is committed as one
:class:`Commit`, atomically, so the state, the due index, the membership and the applied offset
can never disagree after a crash. A commit carries the writer's *epoch* for that partition:
whoever claims a partition later bumps the epoch, and a commit from the earlier owner (a zombie
after a rebalance) is refused instead of overwriting newer state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol


class CommitResult(IntEnum):
    """What a commit did: the caller drops the partition on FENCED."""

    FENCED = -1  # another worker claimed the partition since our claim
    ALREADY_APPLIED = 0  # offset at or below the stored one: nothing written
    APPLIED = 1


@dataclass(frozen=True, slots=True)
class MemberOp:
    """A membership change to record: version-guarded, so an older version never regresses."""

    customer_id: str
    segment: str
    version: int  # odd: member, even: not a member (ENTER/EXIT alternate from version 1)


@dataclass(slots=True)
class Commit:
    """Everything one bundle (or one timer pass) changes in one partition."""

    partition: int
    epoch: int
    offset: int | None = None  # bundle offset applied; None for timer passes
    states: dict[str, bytes] = field(default_factory=dict)
    due: dict[str, int | None] = field(default_factory=dict)  # None: nothing due any more
    forgotten: list[str] = field(default_factory=list)  # erase state, due and membership
    members: list[MemberOp] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # anonymous id -> customer id
    erasures: dict[str, int] = field(default_factory=dict)  # forgotten id -> forget time
    prune_erasures_before: int | None = None  # drop erasures older than this


class StateStore(Protocol):
    """The operations the segmentation worker needs; Redis and memory implement it."""

    async def claim(self, partition: int) -> int:
        """Take ownership of ``partition``: returns the new epoch to stamp on commits."""

    async def applied_offset(self, partition: int) -> int | None:
        """The last bundle offset committed for ``partition``, or None if none."""

    async def load(self, partition: int, customer_ids: list[str]) -> list[bytes | None]:
        """Encoded states of ``customer_ids`` (None where unknown), in the same order."""

    async def due(self, partition: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` (customer_id, due_ms) with due_ms <= upto_ms, earliest first."""

    async def aliases(self, partition: int, anonymous_ids: list[str]) -> list[str | None]:
        """The customer each anonymous id (of this partition) was aliased to, or None."""

    async def erasures(self, partition: int) -> dict[str, int]:
        """Customer id -> event time of its last ``forget``, for the ones still kept (they
        are pruned after the allowed lateness, so this stays small)."""

    async def due_count(self, partition: int, upto_ms: int) -> int:
        """How many customers are due at or before ``upto_ms`` (the timer backlog)."""

    async def commit(self, commit: Commit) -> CommitResult:
        """Apply ``commit`` atomically (see :class:`CommitResult`)."""

    async def segments_of(self, partition: int, customer_id: str) -> dict[str, int]:
        """Segment -> version of the segments ``customer_id`` is a member of."""

    async def sizes(self, partitions: list[int]) -> dict[str, int]:
        """Segment sizes summed over ``partitions``."""

    async def scan_states(self, partition: int, cursor: int,
                          count: int) -> tuple[int, list[tuple[str, bytes]]]:
        """One ``HSCAN`` step over the stored states of ``partition`` (cursor rules as
        :meth:`scan_members`)."""

    async def definitions_version(self, partition: int) -> str | None:
        """The definitions version every stored state of ``partition`` was evaluated with."""

    async def mark_definitions(self, partition: int, version: str) -> None:
        """Record that ``partition``'s states are evaluated with definitions ``version``."""

    async def has_state(self, partition: int, customer_id: str) -> bool:
        """True when ``customer_id`` has a stored state (seen, not forgotten nor merged away)."""

    async def scan_members(self, partition: int, segment: str, cursor: int,
                           count: int) -> tuple[int, list[str]]:
        """One ``SSCAN`` step over the members of ``segment`` in ``partition``.

        Start with cursor 0; the step returns (next cursor, members), next cursor 0 meaning the
        walk is over. ``count`` is a hint (a step may hold more or fewer members, even none);
        a member present for the whole walk is returned at least once. A step that starts and
        ends at cursor 0 holds the whole set.
        """


@dataclass(slots=True)
class _Partition:
    epoch: int = 0
    offset: int | None = None
    states: dict[str, bytes] = field(default_factory=dict)
    due: dict[str, int] = field(default_factory=dict)
    versions: dict[str, dict[str, int]] = field(default_factory=dict)  # customer -> seg -> ver
    members: dict[str, set[str]] = field(default_factory=dict)  # segment -> customers
    aliases: dict[str, str] = field(default_factory=dict)  # anonymous id -> customer id
    definitions: str | None = None
    erasures: dict[str, int] = field(default_factory=dict)  # customer id -> forget time


class MemoryStore:
    """In-process :class:`StateStore` with the same semantics as the Redis one."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def _part(self, partition: int) -> _Partition:
        return self._parts.setdefault(partition, _Partition())

    async def claim(self, partition: int) -> int:
        part = self._part(partition)
        part.epoch += 1
        return part.epoch

    async def applied_offset(self, partition: int) -> int | None:
        return self._part(partition).offset

    async def load(self, partition: int, customer_ids: list[str]) -> list[bytes | None]:
        states = self._part(partition).states
        return [states.get(cid) for cid in customer_ids]

    async def due(self, partition: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        items = sorted(
            ((at, cid) for cid, at in self._part(partition).due.items() if at <= upto_ms)
        )
        return [(cid, at) for at, cid in items[:limit]]

    async def aliases(self, partition: int, anonymous_ids: list[str]) -> list[str | None]:
        links = self._part(partition).aliases
        return [links.get(a) for a in anonymous_ids]

    async def erasures(self, partition: int) -> dict[str, int]:
        return dict(self._part(partition).erasures)

    async def due_count(self, partition: int, upto_ms: int) -> int:
        return sum(1 for at in self._part(partition).due.values() if at <= upto_ms)

    async def commit(self, commit: Commit) -> CommitResult:
        part = self._part(commit.partition)
        if part.epoch != commit.epoch:
            return CommitResult.FENCED
        if commit.offset is not None:
            if part.offset is not None and commit.offset <= part.offset:
                return CommitResult.ALREADY_APPLIED
            part.offset = commit.offset
        part.states.update(commit.states)
        for cid, at in commit.due.items():
            if at is None:
                part.due.pop(cid, None)
            else:
                part.due[cid] = at
        for op in commit.members:
            versions = part.versions.setdefault(op.customer_id, {})
            if versions.get(op.segment, 0) >= op.version:
                continue
            versions[op.segment] = op.version
            members = part.members.setdefault(op.segment, set())
            if op.version % 2:
                members.add(op.customer_id)
            else:
                members.discard(op.customer_id)
        part.aliases.update(commit.aliases)
        part.erasures.update(commit.erasures)
        if commit.prune_erasures_before is not None:
            cut = commit.prune_erasures_before
            part.erasures = {c: t for c, t in part.erasures.items() if t >= cut}
        for cid in commit.forgotten:
            part.states.pop(cid, None)
            part.due.pop(cid, None)
            for seg in part.versions.pop(cid, {}):
                part.members.get(seg, set()).discard(cid)
        return CommitResult.APPLIED

    async def segments_of(self, partition: int, customer_id: str) -> dict[str, int]:
        versions = self._part(partition).versions.get(customer_id, {})
        return {seg: ver for seg, ver in versions.items() if ver % 2}

    async def sizes(self, partitions: list[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in partitions:
            for seg, members in self._part(p).members.items():
                out[seg] = out.get(seg, 0) + len(members)
        return {seg: n for seg, n in out.items() if n}

    async def scan_states(self, partition: int, cursor: int,
                          count: int) -> tuple[int, list[tuple[str, bytes]]]:
        if cursor != 0:
            raise ValueError(f"unknown scan cursor {cursor} (the memory store scans in one step)")
        return 0, sorted(self._part(partition).states.items())

    async def definitions_version(self, partition: int) -> str | None:
        return self._part(partition).definitions

    async def mark_definitions(self, partition: int, version: str) -> None:
        self._part(partition).definitions = version

    async def has_state(self, partition: int, customer_id: str) -> bool:
        return customer_id in self._part(partition).states

    async def scan_members(self, partition: int, segment: str, cursor: int,
                           count: int) -> tuple[int, list[str]]:
        if cursor != 0:
            raise ValueError(f"unknown scan cursor {cursor} (the memory store scans in one step)")
        # one step holding the whole set, as Redis does for small (listpack/intset) sets
        return 0, sorted(self._part(partition).members.get(segment, ()))
