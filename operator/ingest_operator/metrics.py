"""The operator's Prometheus metrics: ingestions by phase, each ingestion's totals from its
status, and reconcile errors.

A worker's own counters (the RFC's ``ingest_csv_*``) start at zero with each pod and are gone
when it ends, and a short run may end between two scrapes. The status is where an ingestion's
totals live, across pods and runs: the operator, which watches every CsvIngestion anyway,
exports them, so a dashboard's totals and rates come from here and are exact.
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest_worker.api.status import Phase

RECONCILE_ERRORS = Counter(
    "csvkafka_operator_reconcile_errors_total",
    "Handler invocations of the operator that raised an error.",
    ["handler"],
)
LEADER = Gauge(
    "csvkafka_operator_leader",
    "1 while this replica holds the operator's Lease and runs the handlers, 0 while it stands by.",
)


@dataclass(frozen=True)
class Totals:
    """What the status of one CsvIngestion says, as numbers."""

    phase: str | None
    rows: Mapping[str, int]
    bytes_read: int
    bytes_total: int | None
    rows_per_second: float | None
    checkpoint_time: float | None
    """Unix time of the newest checkpoint (status.checkpoint, or a unit's in progress)."""
    units: Mapping[str, int]


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def totals_of(status: Mapping[str, Any]) -> Totals:
    """The numbers of a status as the API gives it (camelCase), tolerant of what is absent."""
    units = status.get("units") or {}
    times = [_unix((status.get("checkpoint") or {}).get("time"))]
    times += [_unix(u.get("time")) for u in units.get("active") or []]
    known = [t for t in times if t is not None]
    return Totals(
        phase=status.get("phase"),
        rows={"read": int(status.get("rowsRead") or 0),
              "published": int(status.get("rowsPublished") or 0),
              "failed": int(status.get("rowsFailed") or 0)},
        bytes_read=int(status.get("bytesRead") or 0),
        bytes_total=status.get("bytesTotal"),
        rows_per_second=status.get("rowsPerSecond"),
        checkpoint_time=max(known) if known else None,
        units={k: int(v) for k, v in (units.get("counts") or {}).items()},
    )


class IngestionIndex(Collector):
    """Every CsvIngestion seen: its phase (counted per phase) and its totals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], Totals] = {}

    def set(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """Records a status (None: the ingestion is gone)."""
        with self._lock:
            if status is None:
                self._seen.pop((namespace, name), None)
            else:
                self._seen[(namespace, name)] = totals_of(status)

    def counts(self) -> dict[str, int]:
        with self._lock:
            tally = _Tally(t.phase for t in self._seen.values() if t.phase)
        return {p.value: tally.get(p.value, 0) for p in Phase}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "csvkafka_operator_ingestions", "CsvIngestions by phase.", labels=["phase"]
        )
        for phase, count in self.counts().items():
            gauge.add_metric([phase], count)
        yield gauge
        with self._lock:
            seen = dict(self._seen)
        key = ["namespace", "name"]
        rows = GaugeMetricFamily("csvkafka_ingestion_rows",
                                 "Rows of an ingestion by status (read, published, failed), from "
                                 "its status: every run and pod, up to its checkpoints.",
                                 labels=[*key, "status"])
        read = GaugeMetricFamily("csvkafka_ingestion_bytes_read",
                                 "Bytes of an ingestion's files read, up to its checkpoints.",
                                 labels=key)
        size = GaugeMetricFamily("csvkafka_ingestion_bytes_total",
                                 "Size of an ingestion's files, when known.", labels=key)
        rate = GaugeMetricFamily("csvkafka_ingestion_rows_per_second",
                                 "Rows read per second while a worker runs (status.rowsPerSecond).",
                                 labels=key)
        checkpoint = GaugeMetricFamily(
            "csvkafka_ingestion_checkpoint_timestamp_seconds",
            "When the newest checkpoint of an ingestion was saved (Unix time): time() minus "
            "this is the checkpoint lag.", labels=key)
        units = GaugeMetricFamily("csvkafka_ingestion_units",
                                  "Work units of an ingestion of many files or shards, by state.",
                                  labels=[*key, "state"])
        for (ns, name), t in sorted(seen.items()):
            for status, n in t.rows.items():
                rows.add_metric([ns, name, status], n)
            read.add_metric([ns, name], t.bytes_read)
            if t.bytes_total is not None:
                size.add_metric([ns, name], t.bytes_total)
            if t.rows_per_second is not None:
                rate.add_metric([ns, name], t.rows_per_second)
            if t.checkpoint_time is not None:
                checkpoint.add_metric([ns, name], t.checkpoint_time)
            for state, n in t.units.items():
                units.add_metric([ns, name, state], n)
        yield from (rows, read, size, rate, checkpoint, units)


INGESTIONS = IngestionIndex()
_serving = False
_leading = False


def lead() -> None:
    """This replica holds the Lease: the gauge says so, and the ingestions' series appear. A
    standby exports none: its zeros would sit beside the leader's counts in every query by
    phase. A replica that loses the Lease exits, so nothing is taken back."""
    global _leading
    LEADER.set(1)
    if not _leading:
        REGISTRY.register(INGESTIONS)
        _leading = True


def serve(port: int) -> None:
    """Starts the /metrics endpoint once: a standby serves it before kopf's startup asks."""
    global _serving
    if port and not _serving:
        start_http_server(port)
        _serving = True
