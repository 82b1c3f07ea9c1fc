"""Prometheus metrics of one ingestion, with the names the RFC gives them.

The main process owns them (workers report counts in their chunk results), so no multiprocess
collector is needed. Each run gets its own registry, so runs in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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
        for status in ("read", "processed", "error"):
            self.lines.labels(status)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
