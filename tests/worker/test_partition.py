"""The vectorised partitioners: the Java client's murmur2 and librdkafka's CRC-32, exactly."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.partition import Partitioner, crc32, for_config, murmur2

# Kafka's own test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


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


def packed(keys: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    lens = np.array([len(k) for k in keys], dtype=np.int64)
    return b"".join(keys), np.cumsum(lens) - lens, lens


def signed(u: int) -> int:
    return u - (1 << 32) if u >= 1 << 31 else u


def test_murmur2_matches_the_java_clients_test_vectors() -> None:
    keys = list(JAVA_MURMUR2)
    got = murmur2(*packed(keys)).tolist()
    assert [signed(h) for h in got] == [JAVA_MURMUR2[k] for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=60))
def test_murmur2_and_crc32_match_the_scalar_definitions(keys: list[bytes]) -> None:
    assert murmur2(*packed(keys)).tolist() == [scalar_murmur2(k) for k in keys]
    assert crc32(*packed(keys)).tolist() == [zlib.crc32(k) for k in keys]


def test_partitions_follow_the_hash_and_keyless_messages_stick_to_one() -> None:
    keys = [b"21", b"", b"foobar", b"\xff\x00", b""]
    buf, starts, lens = packed(keys)
    parts = Partitioner("murmur2_random").partitions(len(keys), 7, 3, buf, starts, lens).tolist()
    assert parts[1] == parts[4] == 3
    for i in (0, 2, 3):
        assert parts[i] == (scalar_murmur2(keys[i]) & 0x7FFFFFFF) % 7
    crc = Partitioner("consistent").partitions(len(keys), 7, 3, buf, starts, lens).tolist()
    assert crc[0] == zlib.crc32(b"21") % 7
    assert crc[1] == crc[4] == 0  # librdkafka: the CRC of no key is 0, partition 0
    # murmur2 (not _random) hashes a missing key as the empty one, as librdkafka does
    empty = (scalar_murmur2(b"") & 0x7FFFFFFF) % 5
    assert Partitioner("murmur2").partitions(4, 5, 2, None, None, None).tolist() == [empty] * 4
    assert Partitioner("murmur2_random").partitions(4, 5, 2, None, None, None).tolist() == [2] * 4


@pytest.mark.parametrize(
    ("conf", "name"),
    [({}, "consistent_random"), ({"partitioner": "murmur2_random"}, "murmur2_random"),
     ({"partitioner": "consistent"}, "consistent")],
)
def test_for_config_defaults_to_librdkafkas_partitioner(conf: dict[str, object], name: str) -> None:
    p = for_config(conf)
    assert p is not None and p.name == name


@pytest.mark.parametrize("name", ["random", "fnv1a", "fnv1a_random"])
def test_partitioners_without_a_vectorised_form_are_left_to_librdkafka(name: str) -> None:
    assert for_config({"partitioner": name}) is None


def test_partitions_equal_librdkafkas_own_partitioner_functions() -> None:
    """The partitioner functions librdkafka exports, called directly (keyed messages, and the
    null key for the partitioners that hash it)."""
    import ctypes
    import random

    from ingest_worker.native import _load

    lib = _load()
    rnd = random.Random(11)
    keys = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 30))) for _ in range(500)]
    buf, starts, lens = packed(keys)
    for name in ("murmur2", "murmur2_random", "consistent", "consistent_random"):
        fn = getattr(lib, f"rd_kafka_msg_partitioner_{name}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32,
                       ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = ctypes.c_int32
        for count in (1, 6, 7, 12):
            ours = Partitioner(name).partitions(len(keys), count, 0, buf, starts, lens).tolist()
            assert ours == [fn(None, k, len(k), count, None, None) for k in keys], (name, count)
            if not name.endswith("_random"):  # the _random ones pick a live partition: no rkt
                keyless = Partitioner(name).partitions(1, count, 0, None, None, None).tolist()
                assert keyless == [fn(None, None, 0, count, None, None)], (name, count)
