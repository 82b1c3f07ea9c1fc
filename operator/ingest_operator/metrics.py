"""The operator's Prometheus metrics: ingestions by phase and reconcile errors."""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest_worker.api.status import Phase

RECONCILE_ERRORS = Counter(
    "csvkafka_operator_reconcile_errors_total",
    "Handler invocations of the operator that raised an error.",
    ["handler"],
)


class PhaseIndex(Collector):
    """The phase of every CsvIngestion seen, exported as one gauge per phase."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}

    def set(self, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop((namespace, name), None)
            else:
                self._phases[(namespace, name)] = phase

    def counts(self) -> dict[str, int]:
        with self._lock:
            tally = _Tally(self._phases.values())
        return {p.value: tally.get(p.value, 0) for p in Phase}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "csvkafka_operator_ingestions", "CsvIngestions by phase.", labels=["phase"]
        )
        for phase, count in self.counts().items():
            gauge.add_metric([phase], count)
        yield gauge


PHASES = PhaseIndex()
REGISTRY.register(PHASES)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
