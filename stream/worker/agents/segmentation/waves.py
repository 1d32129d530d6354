"""How a batch of bundle records is cut for the engine: chunks per partition, grouped in waves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Records = list[tuple[int, bytes]]  # (offset, bundle record) of one partition, in order


def chunks(by_partition: dict[int, Records], max_bytes: int) -> Iterator[tuple[int, Records]]:
    """``(partition, records)`` in order, each partition's records cut into runs of at most
    ``max_bytes`` (at least one record each): one engine pass and one commit per run, so a
    batch of full bundles is never decoded at once.

    >>> [(p, [o for o, _ in r]) for p, r in chunks({0: [(1, b"ab"), (2, b"cd"), (3, b"e")],
    ...                                              1: [(7, b"xyz")]}, 3)]
    [(0, [1]), (0, [2, 3]), (1, [7])]
    """
    for p, records in by_partition.items():
        run: Records = []
        size = 0
        for rec in records:
            if run and size + len(rec[1]) > max_bytes:
                yield p, run
                run, size = [], 0
            run.append(rec)
            size += len(rec[1])
        if run:
            yield p, run


def waves(parts: Iterable[tuple[int, Records]], max_bytes: int
          ) -> Iterator[list[tuple[int, Records]]]:
    """Group consecutive chunks into *waves*: at most one chunk per partition and at most
    ``max_bytes`` of records in all (at least one chunk each). A wave's partitions are processed
    together: one wait for the acknowledgements of all their changes, concurrent commits. So a
    batch spread thin over many partitions costs one round trip, not one per partition, and
    no more bundle bytes are decoded at once than before.

    >>> parts = [(0, [(1, b"ab")]), (1, [(7, b"x")]), (1, [(8, b"yz")]), (2, [(3, b"abc")])]
    >>> [[p for p, _ in w] for w in waves(parts, 4)]
    [[0, 1], [1], [2]]
    """
    wave: list[tuple[int, Records]] = []
    size = 0
    for p, records in parts:
        n = sum(len(v) for _, v in records)
        if wave and (size + n > max_bytes or any(q == p for q, _ in wave)):
            yield wave
            wave, size = [], 0
        wave.append((p, records))
        size += n
    if wave:
        yield wave
