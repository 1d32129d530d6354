"""schemas.partitioner must pick exactly the partition Kafka's default partitioner picks."""

from __future__ import annotations

import random
import warnings

import pytest

from schemas.partitioner import murmur2, partition_for

with warnings.catch_warnings():  # kafka-python's package import warns about importlib.resources
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

# Kafka's own vectors: clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java
# (testMurmur2); the Java function returns a signed int.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS.items())
def test_kafka_utils_test_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_matches_kafka_python_on_random_bytes() -> None:
    rng = random.Random(20261123)
    for _ in range(5_000):
        data = rng.randbytes(rng.randint(0, 70))
        assert murmur2(data) & 0xFFFFFFFF == kafka_python_murmur2(data), data


def test_long_keys_beyond_the_precompiled_readers() -> None:
    data = bytes(range(256)) * 3  # 768 bytes, 192 words
    assert murmur2(data) & 0xFFFFFFFF == kafka_python_murmur2(data)


def test_partition_for_matches_kafka_python_default_partitioner() -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_éü日本"
    for _ in range(3_000):
        rid = "".join(rng.choices(alphabet, k=rng.randint(1, 40)))
        n = rng.choice([1, 2, 3, 4, 6, 12, 32, 100])
        expected = (kafka_python_murmur2(rid.encode("utf-8")) & 0x7FFFFFFF) % n
        assert partition_for(rid, n) == expected


def test_partition_for_rejects_no_partitions() -> None:
    with pytest.raises(ValueError, match="positive"):
        partition_for("c", 0)
