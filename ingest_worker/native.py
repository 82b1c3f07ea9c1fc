"""A chunk-at-a-time producer: librdkafka's ``rd_kafka_produce_batch`` through ctypes.

Why: with confluent-kafka every row costs a Python ``produce()`` call (~1.5 µs of one core, the
ceiling PERF-NOTES measured), on top of parsing. Here the NDJSON buffer polars wrote and the
message boundaries numpy found go to librdkafka in one C call per chunk: no Python per row.

It uses the librdkafka shipped inside the confluent-kafka wheel (the same library the Python
client uses, a separate client instance). If that library cannot be found, :func:`available`
says so and the worker falls back to the confluent-kafka path (``producer.Deliverer``).

Semantics match ``Deliverer``: error-only delivery reports, a chunk is acknowledged when
``flush`` returned 0 with no error reported, failed messages are re-produced (same bytes) with
exponential backoff and jitter until the retry budget is spent.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest_worker import partition
from ingest_worker.producer import AckWaiter, KafkaUnavailable

log = logging.getLogger("ingest_worker.kafka")

# rd_kafka_message_t on LP64 (x86_64, aarch64): see rdkafka.h.
MSG_DTYPE = np.dtype(
    {
        "names": ["err", "rkt", "partition", "payload", "len", "key", "key_len", "offset", "priv"],
        "formats": ["<i4", "<u8", "<i4", "<u8", "<u8", "<u8", "<u8", "<i8", "<u8"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 64],
        "itemsize": 72,
    }
)
PARTITION_UA = -1
PARTITION_COUNT_MAX_AGE_S = 30.0
"""How long a topic's partition count is trusted (librdkafka refreshes its own less often)."""
PARTITION_COUNT_RETRY_S = 5.0
MSG_F_NO_COPY = 0
"""Neither RD_KAFKA_MSG_F_COPY nor _FREE: librdkafka reads the payload from our buffer."""
PURGE_QUEUE = 0x1
PURGE_INFLIGHT = 0x2
_NEVER_FREED: list[object] = []
"""Buffers of a producer that was never closed (see ``NativeProducer.__del__``)."""
ERR_QUEUE_FULL = -184
ERR_MSG_TIMED_OUT = -192
ERR_TIMED_OUT = -185
ERR_TRANSPORT = -195
ERR_ALL_BROKERS_DOWN = -187
RETRIABLE = {
    ERR_MSG_TIMED_OUT, ERR_TIMED_OUT, ERR_TRANSPORT, ERR_ALL_BROKERS_DOWN,
    -152, -151,  # _PURGE_QUEUE, _PURGE_INFLIGHT
    6, 7, 5, 19, 20,  # NOT_LEADER, REQUEST_TIMED_OUT, LEADER_NOT_AVAILABLE, NOT_ENOUGH_REPLICAS*
}


class _Message(ctypes.Structure):
    _fields_ = [
        ("err", ctypes.c_int),
        ("rkt", ctypes.c_void_p),
        ("partition", ctypes.c_int32),
        ("payload", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("key", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("offset", ctypes.c_int64),
        ("_private", ctypes.c_void_p),
    ]


class _MetaTopic(ctypes.Structure):
    _fields_ = [
        ("topic", ctypes.c_char_p),
        ("partition_cnt", ctypes.c_int),
        ("partitions", ctypes.c_void_p),
        ("err", ctypes.c_int),
    ]


class _Metadata(ctypes.Structure):
    _fields_ = [
        ("broker_cnt", ctypes.c_int),
        ("brokers", ctypes.c_void_p),
        ("topic_cnt", ctypes.c_int),
        ("topics", ctypes.POINTER(_MetaTopic)),
        ("orig_broker_id", ctypes.c_int32),
        ("orig_broker_name", ctypes.c_char_p),
    ]


DR_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_Message), ctypes.c_void_p)
ERROR_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)

_lib: Any = None


def _load() -> Any:
    global _lib
    if _lib is not None:
        return _lib
    import confluent_kafka

    site = os.path.dirname(os.path.dirname(os.path.abspath(confluent_kafka.__file__)))
    candidates = sorted(glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*")))
    if not candidates:
        raise OSError("librdkafka not found next to confluent_kafka")
    lib = ctypes.CDLL(candidates[0])
    vp, cp, sz, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, sz]
    lib.rd_kafka_conf_set.restype = i
    lib.rd_kafka_conf_set_dr_msg_cb.argtypes = [vp, DR_CB]
    lib.rd_kafka_conf_set_error_cb.argtypes = [vp, ERROR_CB]
    lib.rd_kafka_conf_set_log_cb.argtypes = [vp, LOG_CB]
    lib.rd_kafka_new.argtypes = [i, vp, cp, sz]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_set_log_queue.argtypes = [vp, vp]
    lib.rd_kafka_topic_new.argtypes = [vp, cp, vp]
    lib.rd_kafka_topic_new.restype = vp
    lib.rd_kafka_produce_batch.argtypes = [vp, ctypes.c_int32, i, vp, i]
    lib.rd_kafka_produce_batch.restype = i
    lib.rd_kafka_poll.argtypes = [vp, i]
    lib.rd_kafka_poll.restype = i
    lib.rd_kafka_flush.argtypes = [vp, i]
    lib.rd_kafka_flush.restype = i
    lib.rd_kafka_outq_len.argtypes = [vp]
    lib.rd_kafka_outq_len.restype = i
    lib.rd_kafka_err2str.argtypes = [i]
    lib.rd_kafka_err2str.restype = cp
    lib.rd_kafka_topic_destroy.argtypes = [vp]
    lib.rd_kafka_purge.argtypes = [vp, i]
    lib.rd_kafka_purge.restype = i
    lib.rd_kafka_metadata.argtypes = [vp, i, vp, ctypes.POINTER(ctypes.POINTER(_Metadata)), i]
    lib.rd_kafka_metadata.restype = i
    lib.rd_kafka_metadata_destroy.argtypes = [ctypes.POINTER(_Metadata)]
    lib.rd_kafka_destroy.argtypes = [vp]
    _lib = lib
    return lib


def available() -> bool:
    try:
        _load()
    except (OSError, AttributeError, ImportError):
        return False
    return MSG_DTYPE.itemsize == ctypes.sizeof(_Message)


@dataclass
class _Failure:
    payload: bytes
    key: bytes | None
    err: int


class NativeProducer(AckWaiter):
    """One librdkafka producer for one topic, fed whole chunks."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        retry_budget_s: float,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        lib = _load()
        self.lib = lib
        self.should_stop = should_stop
        self.retry_budget_s = retry_budget_s
        self.failures: list[_Failure] = []
        self.last_error = ""
        self.fatal_error: str | None = None
        conf = lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        settings = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool))}
        settings["log.queue"] = True  # logs come out of poll() in this thread, as JSON logs
        for k, v in settings.items():
            sval = str(v).lower() if isinstance(v, bool) else str(v)
            if lib.rd_kafka_conf_set(conf, k.encode(), sval.encode(), err, 512) != 0:
                raise ValueError(f"producer property {k}={sval}: {err.value.decode()}")
        # Keep the callbacks referenced: librdkafka holds raw pointers to them.
        self._dr = DR_CB(self._on_delivery)
        self._err = ERROR_CB(self._on_error)
        self._log = LOG_CB(self._on_log)
        lib.rd_kafka_conf_set_dr_msg_cb(conf, self._dr)
        lib.rd_kafka_conf_set_error_cb(conf, self._err)
        lib.rd_kafka_conf_set_log_cb(conf, self._log)
        rk = lib.rd_kafka_new(0, conf, err, 512)  # 0: RD_KAFKA_PRODUCER; takes conf
        if not rk:
            raise ValueError(f"cannot create the producer: {err.value.decode()}")
        self.rk = rk
        lib.rd_kafka_set_log_queue(rk, None)
        self.rkt = lib.rd_kafka_topic_new(rk, topic.encode(), None)
        self.topic = topic
        self.partitioner = partition.for_config(config)
        self._partition_count: int | None = None
        self._partition_count_at = -math.inf
        self._sticky = random.randrange(1 << 16)
        # Buffers librdkafka points into (messages are not copied): kept until acknowledged.
        self._inflight: list[object] = []

    # --- callbacks (run inside poll/flush, in this thread) --------------------------------------

    def _on_delivery(self, rk: Any, msg: Any, opaque: Any) -> None:
        m = msg.contents
        if m.err == 0:
            return
        payload = ctypes.string_at(m.payload, m.len) if m.payload else b""
        key = ctypes.string_at(m.key, m.key_len) if m.key else None
        self.failures.append(_Failure(payload, key, int(m.err)))
        self.last_error = self._errstr(int(m.err))

    def _on_error(self, rk: Any, err: int, reason: bytes | None, opaque: Any) -> None:
        self.last_error = (reason or b"").decode(errors="replace")
        if err == -150:  # RD_KAFKA_RESP_ERR__FATAL
            self.fatal_error = self.last_error

    def _on_log(self, rk: Any, level: int, fac: bytes | None, buf: bytes | None) -> None:
        text = f"{(fac or b'').decode()} {(buf or b'').decode(errors='replace')}"
        log.log(logging.ERROR if level <= 3 else logging.WARNING if level == 4 else
                logging.INFO if level <= 6 else logging.DEBUG, text)

    def _errstr(self, code: int) -> str:
        s = self.lib.rd_kafka_err2str(code)
        return s.decode() if s else str(code)

    # --- producing ------------------------------------------------------------------------------

    def partition_count(self) -> int | None:
        """The topic's partition count from the broker (cached), or None while unknown."""
        now = time.monotonic()
        age = now - self._partition_count_at
        if age < (PARTITION_COUNT_MAX_AGE_S if self._partition_count else PARTITION_COUNT_RETRY_S):
            return self._partition_count
        self._partition_count_at = now
        md = ctypes.POINTER(_Metadata)()
        if self.lib.rd_kafka_metadata(self.rk, 0, self.rkt, ctypes.byref(md), 2000) != 0:
            return self._partition_count  # the last known count, or None: librdkafka partitions
        try:
            topics = [md.contents.topics[i] for i in range(md.contents.topic_cnt)]
            counts = [t.partition_cnt for t in topics if t.err == 0 and t.partition_cnt > 0]
            if counts:
                self._partition_count = counts[0]
        finally:
            self.lib.rd_kafka_metadata_destroy(md)
        return self._partition_count

    def produce_chunk(
        self,
        buf: bytes,
        starts: npt.NDArray[np.int64],
        lens: npt.NDArray[np.int64],
        kbuf: bytes | None = None,
        kstarts: npt.NDArray[np.int64] | None = None,
        klens: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Enqueues every line of ``buf``; waits when the queue is full. librdkafka points into
        ``buf`` (no copy of the values), so it is kept until :meth:`flush_all` returns.

        With a partitioner of ours (see :mod:`partition`) and the partition count known, one
        batch per partition, in file order within each; otherwise librdkafka partitions.
        """
        n = len(starts)
        if n == 0:
            return
        vbase = np.frombuffer(buf, dtype=np.uint8).ctypes.data if buf else 0
        msgs = np.zeros(n, dtype=MSG_DTYPE)
        msgs["partition"] = PARTITION_UA
        msgs["payload"] = vbase + starts.astype(np.uint64)
        msgs["len"] = lens
        if kbuf is not None and kstarts is not None and klens is not None:
            kbase = np.frombuffer(kbuf, dtype=np.uint8).ctypes.data if kbuf else 0
            msgs["key"] = np.where(klens > 0, kbase + kstarts.astype(np.uint64), 0)
            msgs["key_len"] = klens
        count = self.partition_count() if self.partitioner is not None else None
        if self.partitioner is None or count is None:
            self._submit(msgs, PARTITION_UA, (buf, kbuf))
            return
        self._sticky += 1
        parts = self.partitioner.partitions(n, count, self._sticky % count, kbuf, kstarts, klens)
        order = np.argsort(parts, kind="stable")
        parts = parts[order]
        bounds = np.searchsorted(parts, np.arange(count + 1)).tolist()
        msgs = msgs[order]
        for p in range(count):
            if bounds[p] < bounds[p + 1]:
                self._submit(msgs[bounds[p] : bounds[p + 1]], p, (buf, kbuf))

    def _submit(self, msgs: npt.NDArray[Any], partition: int, keepalive: object) -> None:
        lib = self.lib
        self._inflight.append(keepalive)  # before the first message can point into it
        start = time.monotonic()
        while len(msgs):
            done = lib.rd_kafka_produce_batch(self.rkt, partition, MSG_F_NO_COPY,
                                              msgs.ctypes.data, len(msgs))
            if done == len(msgs):
                break
            errs = msgs["err"]
            failed = errs != 0
            other = set(np.unique(errs[failed]).tolist()) - {ERR_QUEUE_FULL}
            if other:
                code = other.pop()
                raise KafkaUnavailable(f"cannot produce to {self.topic}: {self._errstr(code)}")
            msgs = msgs[failed].copy()  # retry the same records, in order
            msgs["err"] = 0
            before = lib.rd_kafka_outq_len(self.rk)
            failed_before = len(self.failures)
            lib.rd_kafka_poll(self.rk, 50)
            self._check_fatal()
            # Room made by acknowledgements, not by messages timing out (broker down).
            if before - lib.rd_kafka_outq_len(self.rk) > len(self.failures) - failed_before:
                start = time.monotonic()
            elif time.monotonic() - start > self.retry_budget_s:
                why = self.last_error or "queue full, no progress"
                raise KafkaUnavailable(f"Kafka unavailable for {self.retry_budget_s:.0f}s: {why}")
            if self.should_stop():
                raise InterruptedError("stopping")
        lib.rd_kafka_poll(self.rk, 0)

    def _check_fatal(self) -> None:
        if self.fatal_error is not None:
            raise KafkaUnavailable(f"fatal producer error: {self.fatal_error}")

    # --- AckWaiter hooks ------------------------------------------------------------------------

    def _queued(self) -> int:
        return int(self.lib.rd_kafka_outq_len(self.rk))

    def _flush_for(self, seconds: float) -> None:
        self.lib.rd_kafka_flush(self.rk, int(seconds * 1000))  # an error code, not a count

    def _poll_for(self, seconds: float) -> None:
        self.lib.rd_kafka_poll(self.rk, int(seconds * 1000))

    def _permanent_error(self, failed: list[Any]) -> str | None:
        for f in failed:
            if f.err not in RETRIABLE:
                return f"delivery to {self.topic} failed permanently: {self._errstr(f.err)}"
        return None

    def _reproduce(self, failed: list[Any]) -> None:
        buf = b"".join(f.payload for f in failed)
        lens = np.fromiter((len(f.payload) for f in failed), dtype=np.int64, count=len(failed))
        starts = np.cumsum(lens) - lens
        if any(f.key is not None for f in failed):
            kbuf = b"".join(f.key or b"" for f in failed)
            klens = np.fromiter((len(f.key or b"") for f in failed), dtype=np.int64,
                                count=len(failed))
            self.produce_chunk(buf, starts, lens, kbuf, np.cumsum(klens) - klens, klens)
        else:
            self.produce_chunk(buf, starts, lens)

    def flush_all(self) -> None:
        super().flush_all()
        self._inflight.clear()

    def close(self, timeout_s: float = 5.0, abort: bool = False) -> None:
        """Flushes (or, with ``abort``, drops what is not acknowledged) and destroys the
        client. Only then are the buffers its messages point into let go."""
        if self.rk:
            if abort:
                self.lib.rd_kafka_purge(self.rk, PURGE_QUEUE | PURGE_INFLIGHT)
            else:
                self.lib.rd_kafka_flush(self.rk, int(timeout_s * 1000))
            self.lib.rd_kafka_topic_destroy(self.rkt)
            self.lib.rd_kafka_destroy(self.rk)  # joins librdkafka's threads
            self.rk = None
        self._inflight.clear()

    def __del__(self) -> None:
        # Never closed (should not happen: the worker closes in a finally): librdkafka may
        # still read these buffers, so they are leaked rather than freed under it.
        if getattr(self, "rk", None):
            _NEVER_FREED.extend(getattr(self, "_inflight", []))
