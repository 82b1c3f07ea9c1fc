"""The compiled core's partitioners: the Java client's murmur2 and librdkafka's CRC-32, exactly,
and the partitions librdkafka itself chooses, as a real broker records them."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from csvkafka_core import murmur2, partition_of
from hypothesis import given, settings
from hypothesis import strategies as st

# Kafka's own test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
KEY_PARTITIONERS = ("murmur2", "murmur2_random", "consistent", "consistent_random")


def scalar_murmur2(data: bytes) -> int:
    """A line-by-line transcription of ``Utils.murmur2`` (unsigned result)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    for i in range(0, len(data) - len(data) % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail, base = len(data) % 4, len(data) & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h = ((h ^ data[base]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)


def java_partition(key: bytes, count: int) -> int:
    """``Utils.toPositive(Utils.murmur2(key)) % numPartitions``: the Java client's choice."""
    return (scalar_murmur2(key) & 0x7FFFFFFF) % count


def signed(u: int) -> int:
    return u - (1 << 32) if u >= 1 << 31 else u


def test_murmur2_matches_the_java_clients_test_vectors() -> None:
    assert {k: signed(murmur2(k)) for k in JAVA_MURMUR2} == JAVA_MURMUR2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=60), st.integers(1, 64))
def test_murmur2_and_crc32_match_the_scalar_definitions(keys: list[bytes], count: int) -> None:
    assert [murmur2(k) for k in keys] == [scalar_murmur2(k) for k in keys]
    for k in keys:
        assert partition_of("murmur2", k, count) == java_partition(k, count)
        assert partition_of("murmur2_random", k, count) == java_partition(k, count)
        assert partition_of("consistent", k, count) == zlib.crc32(k) % count
        assert partition_of("consistent_random", k, count) == zlib.crc32(k) % count


def test_partitions_follow_the_hash_and_keyless_messages_stick_to_one() -> None:
    for key in (b"21", b"foobar", b"\xff\x00", b""):
        assert partition_of("murmur2_random", key, 7, 3) == java_partition(key, 7)
        assert partition_of("consistent", key, 7, 3) == zlib.crc32(key) % 7
    # The _random ones put a keyless message on the batch's sticky partition.
    assert partition_of("murmur2_random", None, 7, 3) == 3
    assert partition_of("consistent_random", None, 7, 5) == 5
    # murmur2 (not _random) hashes a missing key as the empty one, as librdkafka does
    assert partition_of("murmur2", None, 5, 2) == java_partition(b"", 5)
    assert partition_of("consistent", None, 7, 3) == 0  # librdkafka: CRC of no key is 0


@pytest.mark.parametrize("name", ["random", "fnv1a", "fnv1a_random", "nope"])
def test_partitioners_without_a_compiled_form_are_left_to_librdkafka(name: str) -> None:
    with pytest.raises(ValueError, match="not a key partitioner"):
        partition_of(name, b"k", 6)


# --- against librdkafka itself, through the real broker ---------------------------------------


@pytest.mark.parametrize("name", KEY_PARTITIONERS)
def test_partitions_equal_librdkafkas_own_partitioner(
    name: str, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """librdkafka's partitioner of that name (confluent_kafka's producer) places random keys,
    the broker records where: the compiled core computes the same partition for every key.
    With murmur2 that is where the Java client puts them too."""
    count = 7
    topic = new_topic(partitions=count)
    rnd = random.Random(11)
    keys = list({bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 30)))
                 for _ in range(300)})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": name})
    for i, k in enumerate(keys):
        producer.produce(topic, value=str(i).encode(), key=k)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
        placed: dict[bytes, int] = {}
        while len(placed) < len(keys):
            batch = consumer.consume(len(keys) - len(placed), timeout=10)
            assert batch, f"only {len(placed)} of {len(keys)} messages came back"
            for m in batch:
                assert m.error() is None, m.error()
                placed[m.key()] = m.partition()
    finally:
        consumer.close()
    assert {k: partition_of(name, k, count) for k in keys} == placed
    if name.startswith("murmur2"):
        assert placed == {k: java_partition(k, count) for k in keys}
