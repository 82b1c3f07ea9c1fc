"""Kafka's key partitioners, vectorised: a whole chunk's partitions in a few numpy passes.

Why: librdkafka enqueues a batch bound for one partition in a single step, but a batch left to
its partitioner costs a hash, a lock and a queue insert per message: about twice the producer's
CPU on keyed data (bench/README.md). So the worker computes the partitions itself, with the
same functions librdkafka and the Java client use, and hands librdkafka one batch per partition.

``murmur2`` is the Java client's hash (``Utils.murmur2``, then ``toPositive(h) % n``), so a key
lands where Kafka Streams, Connect or any Java producer would put it; ``consistent`` is
librdkafka's CRC-32. With the ``_random`` variants, messages without a key go to one partition
per chunk, as librdkafka's sticky partitioning does per linger window; ``murmur2`` and
``consistent`` hash a missing key as the empty one. Other partitioners (``random``, ``fnv1a``)
are left to librdkafka: :func:`for_config` returns None for them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]

_M = np.uint32(0x5BD1E995)
_SEED = 0x9747B28C


HashFixed = Callable[[npt.NDArray[np.uint8], int], U32]


def _by_length(buf: bytes, starts: IntArray, lens: IntArray, hash_fixed: HashFixed) -> U32:
    """Applies ``hash_fixed`` to the keys grouped by length (one matrix of bytes per length)."""
    out = np.empty(len(starts), dtype=np.uint32)
    view = np.frombuffer(buf, dtype=np.uint8)
    for length in np.unique(lens).tolist():
        rows = np.flatnonzero(lens == length)
        if length == 0:
            mat = np.empty((len(rows), 0), dtype=np.uint8)
        else:
            mat = view[starts[rows][:, None] + np.arange(length)]
        out[rows] = hash_fixed(mat, length)
    return out


def _murmur2_fixed(mat: npt.NDArray[np.uint8], length: int) -> U32:
    h = np.full(len(mat), (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    nblocks = length // 4
    if nblocks:
        blocks = np.ascontiguousarray(mat[:, : nblocks * 4]).view("<u4")
        for j in range(nblocks):
            k = blocks[:, j] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    tail, base = length % 4, nblocks * 4
    if tail >= 3:
        h ^= mat[:, base + 2].astype(np.uint32) << np.uint32(16)
    if tail >= 2:
        h ^= mat[:, base + 1].astype(np.uint32) << np.uint32(8)
    if tail >= 1:
        h ^= mat[:, base].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def murmur2(buf: bytes, starts: IntArray, lens: IntArray) -> U32:
    """Kafka's murmur2 of each key ``buf[starts[i]:starts[i]+lens[i]]`` (unsigned 32-bit)."""
    return _by_length(buf, starts, lens, _murmur2_fixed)


def _crc_table() -> U32:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0xEDB88320),
                         table >> np.uint32(1)).astype(np.uint32)
    return table


_CRC = _crc_table()


def _crc32_fixed(mat: npt.NDArray[np.uint8], length: int) -> U32:
    crc = np.full(len(mat), 0xFFFFFFFF, dtype=np.uint32)
    for j in range(length):
        crc = _CRC[(crc ^ mat[:, j]) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


def crc32(buf: bytes, starts: IntArray, lens: IntArray) -> U32:
    """CRC-32 (zlib's, which librdkafka's ``consistent`` partitioner uses) of each key."""
    return _by_length(buf, starts, lens, _crc32_fixed)


# partitioner name -> (its hash of a key, the mask applied before the modulo): the Java client
# takes murmur2's positive part, librdkafka's CRC-32 is used as an unsigned whole.
_PARTITIONERS: dict[str, tuple[Callable[[bytes, IntArray, IntArray], U32], int]] = {
    "murmur2": (murmur2, 0x7FFFFFFF),
    "murmur2_random": (murmur2, 0x7FFFFFFF),
    "consistent": (crc32, 0xFFFFFFFF),
    "consistent_random": (crc32, 0xFFFFFFFF),
}


class Partitioner:
    """Partitions of a chunk's messages, as librdkafka's partitioner of the same name would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hash, self.mask = _PARTITIONERS[name]
        self.random_when_keyless = name.endswith("_random")

    def partitions(
        self,
        n: int,
        partition_count: int,
        sticky: int,
        kbuf: bytes | None,
        kstarts: IntArray | None,
        klens: IntArray | None,
    ) -> npt.NDArray[np.int32]:
        """The partition of each of ``n`` messages. An empty key is sent as null: the
        ``_random`` partitioners leave null keys to librdkafka's sticky partitioning (one
        partition per linger window; here ``sticky``, one per chunk), ``murmur2`` and
        ``consistent`` hash them as the empty key."""
        if kbuf is None or kstarts is None or klens is None:
            if self.random_when_keyless:
                return np.full(n, sticky, dtype=np.int32)
            empty = np.zeros(1, dtype=np.int64)
            return np.full(n, self._partition(self.hash(b"", empty, empty), partition_count)[0],
                           dtype=np.int32)
        parts = self._partition(self.hash(kbuf, kstarts, klens), partition_count)
        if self.random_when_keyless:
            parts[klens == 0] = sticky
        return parts

    def _partition(self, hashed: U32, partition_count: int) -> npt.NDArray[np.int32]:
        masked = hashed & np.uint32(self.mask)
        return (masked % np.uint32(partition_count)).astype(np.int32)


def for_config(config: dict[str, object]) -> Partitioner | None:
    """The vectorised partitioner the producer configuration names, or None (librdkafka's)."""
    name = str(config.get("partitioner", "consistent_random"))
    return Partitioner(name) if name in _PARTITIONERS else None
