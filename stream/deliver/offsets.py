"""Which offsets of the changes topic may be committed: at-least-once across destinations.

Every consumed record gets a :class:`Ticket` counting the destinations it still waits for
(0 when no destination wants its segment). A partition's offset is committed up to, not
beyond, its first record that some destination has not delivered or dead-lettered yet, so a
crash redelivers everything that was not finished everywhere (and never skips a record).

>>> t = OffsetTracker()
>>> a, b, c = t.track(0, 10, 2), t.track(0, 11, 0), t.track(0, 12, 1)
>>> t.ready()                      # offset 10 waits for two destinations
{}
>>> c.done(); a.done(); t.ready()  # 12 is done, but 10 still waits for one
{}
>>> a.done(); t.ready(), t.pending()
({0: 13}, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class Ticket:
    """One consumed record: its place and how many destinations still have to finish it."""

    __slots__ = ("offset", "partition", "remaining")

    def __init__(self, partition: int, offset: int, remaining: int) -> None:
        self.partition = partition
        self.offset = offset
        self.remaining = remaining

    def done(self) -> None:
        """One destination delivered or dead-lettered the record."""
        self.remaining -= 1


class OffsetTracker:
    """Tickets per partition, in offset order."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[Ticket]] = {}

    def track(self, partition: int, offset: int, destinations: int) -> Ticket:
        ticket = Ticket(partition, offset, destinations)
        self._queues.setdefault(partition, deque()).append(ticket)
        return ticket

    def ready(self) -> dict[int, int]:
        """``partition -> offset to commit`` (the next offset to read) for the partitions
        whose finished prefix grew since the last call."""
        out: dict[int, int] = {}
        for partition, queue in self._queues.items():
            last = None
            while queue and queue[0].remaining <= 0:
                last = queue.popleft().offset
            if last is not None:
                out[partition] = last + 1
        return out

    def pending(self) -> int:
        """Records consumed and not finished everywhere yet."""
        return sum(len(q) for q in self._queues.values())

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the tickets of revoked partitions (their new owner reads them again)."""
        for p in partitions:
            self._queues.pop(p, None)
