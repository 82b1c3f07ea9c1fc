"""Prometheus metrics of one ingestion, with the names the RFC gives them.

The main process owns them (workers report counts in their chunk results), so no multiprocess
collector is needed. Each run gets its own registry, so runs in one process do not collide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

FINAL_SCRAPE_MAX_S = 60.0
"""The longest a worker waits for a last scrape after its run."""


class _Scrapes(Collector):
    """Notes when the registry is collected: each collect is a scrape."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.changed = threading.Condition()

    def collect(self) -> Iterator[Metric]:
        with self.changed:
            self.times = [*self.times[-1:], time.monotonic()]
            self.changed.notify_all()
        return iter(())


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lines = Counter(
            "ingest_csv_lines", "CSV data rows by status: read, processed (acknowledged), error.",
            ["status"], registry=r,
        )
        self.errors = Counter(
            "csv_processing_errors", "Rows that could not be parsed or converted.", registry=r
        )
        self.duration = Histogram(
            "ingest_csv_duration_seconds", "Time to process a whole file.",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600), registry=r,
        )
        self.chunk_duration = Histogram(
            "ingest_csv_chunk_duration_seconds",
            "Time from parsing a chunk to its acknowledgement by Kafka.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
        self.offset = Gauge(
            "ingest_csv_current_offset", "Byte offset of the last saved checkpoint.", registry=r
        )
        self.bytes_read = Counter(
            "ingest_csv_bytes_read", "Bytes of the (uncompressed) file processed.", registry=r
        )
        self.bytes_total = Gauge(
            "ingest_csv_bytes_total", "Size of the (uncompressed) file, when known (else -1).",
            registry=r,
        )
        # Beyond the RFC's (their names unchanged): for the dashboard.
        self.checkpoint_lag = Gauge(
            "ingest_csv_checkpoint_lag_rows",
            "Rows read past the last saved checkpoint: what a crash now would send again.",
            registry=r,
        )
        self.kafka_retry = Counter(
            "ingest_csv_kafka_retry_seconds",
            "Seconds the producers spent in Kafka faults: from an error Kafka reported while "
            "rows waited (a failed delivery, a lost connection) to the acknowledgement that "
            "ended it, summed over the producers.",
            registry=r,
        )
        for status in ("read", "processed", "error"):
            self.lines.labels(status)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self._scrapes = _Scrapes()
        self.registry.register(self._scrapes)
        start_http_server(port, addr=addr, registry=self.registry)

    def await_final_scrape(self) -> float:
        """Waits until a scrape after now, when something scrapes this process (two scrapes
        seen), for at most twice its interval: a pod's last counts reach Prometheus rather
        than end between two scrapes. Returns the seconds waited (0 when nothing scrapes)."""
        scrapes: _Scrapes | None = getattr(self, "_scrapes", None)
        if scrapes is None:
            return 0.0
        start = time.monotonic()
        with scrapes.changed:
            if len(scrapes.times) < 2:
                return 0.0
            interval = scrapes.times[-1] - scrapes.times[-2]
            deadline = start + min(2 * interval + 1, FINAL_SCRAPE_MAX_S)
            while scrapes.times[-1] < start and time.monotonic() < deadline:
                scrapes.changed.wait(deadline - time.monotonic())
            seen = scrapes.times[-1] >= start
        if seen:
            # The scrape has only begun (collected first): let its answer go out before the
            # process ends, or Prometheus records a failed scrape instead of the last counts.
            time.sleep(min(0.5, interval / 2))
        return time.monotonic() - start
