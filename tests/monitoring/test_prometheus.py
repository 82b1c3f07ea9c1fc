"""Prometheus, for real: the environment's server scrapes the operator and the worker pods the
way manifests/monitoring's PodMonitors say, and answers with the right numbers (issue 16).

An ingestion of known size runs on the node with its worker killed once: the operator's
per-ingestion totals (from the status) are exact; the workers' own counters, which start at
zero in each pod and are only scraped while it runs, add up to the rows within one checkpoint
interval. Every query of the Grafana dashboard returns data, evaluated while the run went.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import TestEnv
from tests.monitoring.test_dashboard import queries
from tests.node import kill_container
from tests.operator.conftest import OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import Ingestions, ingestion, running_worker
from tests.sources.servers import RangeFileServer

ROWS = 600_000
BYTES_PER_SECOND = 600_000  # the source's pace: a 15 MB file takes about 25 s
EVERY_ROWS = 100_000


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr, **({} if at is None else {"time": f"{at:.3f}"})}
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}",
                                timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_has_the_operators_exact_totals_and_the_workers_within_an_interval(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    url = testenv.environ["CSVKAFKA_PROMETHEUS_URL"]
    csv = write_csv(tmp_path / "scraped.csv", ROWS)
    # An http source served slowly: a run of tens of seconds, scraped many times before and
    # after the kill (a worker reads a local file at 800k rows a second).
    server = RangeFileServer(root=tmp_path, bytes_per_second=BYTES_PER_SECOND).start()
    try:
        ingestions.create(ingestion("scraped", f"{server.url}/scraped.csv",
                                    new_topic(partitions=3), testenv.kafka_bootstrap,
                                    checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 1}))
        _run_with_a_kill(url, ingestions, namespace, csv)
    finally:
        server.stop()


def _run_with_a_kill(url: str, ingestions: Ingestions, namespace: str, csv: Path) -> None:
    sel = f'namespace="{namespace}"'
    wait_for("the worker's series", lambda: value(
        url, f'ingest_csv_lines_total{{{sel},status="read"}} > 0'), timeout=120, interval=0.5)
    time.sleep(2)  # a few more scrapes of the running worker and of the operator
    during = time.time() - 1
    st = ingestions.status("scraped")
    assert st.get("phase") == "InProgress" and st.get("rowsRead", 0) < ROWS, st
    pod = wait_for("a worker to kill", lambda: (p := running_worker(ingestions, "scraped-1"))
                   and kill_container(namespace, p, "worker") and p, timeout=60, interval=0.05)
    # Every query of the dashboard, as Grafana would have run it during the run.
    for expr in queries():
        assert query(url, expr, at=during), f"no data: {expr}"
    st = ingestions.wait_phase("scraped", "Completed", timeout=600)
    assert st["rowsPublished"] == ROWS

    # The operator's totals, from the status: exact.
    ingestion_sel = f'{sel},name="scraped"'
    def rows(status: str) -> float | None:
        return value(url, f'csvkafka_ingestion_rows{{{ingestion_sel},status="{status}"}}')

    wait_for("the operator's final totals", lambda: rows("published") == ROWS, timeout=30,
             interval=0.5)
    assert (rows("read"), rows("failed")) == (ROWS, 0)
    assert value(url, f"csvkafka_ingestion_bytes_read{{{ingestion_sel}}}") == csv.stat().st_size
    # The workers' own (the RFC's names): two pods, each counted from zero, each last scraped
    # up to a second before it ended; their sum is the rows within one checkpoint interval.
    processed = value(url, "sum(max_over_time(ingest_csv_lines_total"
                           f'{{{sel},status="processed"}}[15m]))')
    assert processed is not None and abs(processed - ROWS) <= EVERY_ROWS, processed
    assert value(url, f"max_over_time(ingest_csv_bytes_total{{{sel}}}[15m])") == \
        csv.stat().st_size
    assert value(url, f"max_over_time(ingest_csv_current_offset{{{sel}}}[15m])")
    assert value(url, f"sum(max_over_time(csv_processing_errors_total{{{sel}}}[15m]))") == 0
    seen = {r["metric"]["pod"] for r in query(
        url, f"max_over_time(ingest_csv_lines_total{{{sel},status=\"read\"}}[15m])")}
    assert pod in seen and len(seen) == 2, seen
    # The operator itself, and its count by phase.
    assert value(url, 'up{job="csvkafka-operator"}') == 1
    assert (value(url, 'csvkafka_operator_ingestions{phase="Completed"}') or 0) >= 1
