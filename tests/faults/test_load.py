"""Load, as CI runs it: 20 CsvIngestions applied at once, each a small file to a topic of its
own, with the code of ``make load`` (bench/load.py: 200, then 1,000). Every one Completed and
verified, and no 429 from the API server left without a later success; the figures (apply ->
Job p50 and p99, the operator's peak RSS and CPU, API requests per second from the operator and
from the workers) are printed and recorded, not asserted: speed is for the benchmarks."""

from __future__ import annotations

import os

import pytest

from bench.load import run_load
from tests.conftest import TestEnv
from tests.faults.test_faults import report_row
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment
from tests.operator.test_operator import record_figure


@pytest.mark.slow
def test_twenty_ingestions_at_once(
    operator: OperatorDeployment,
    testenv: TestEnv,
    kube_api: object,
    namespace: str,
    data: DataVolume,
) -> None:
    count = int(os.environ.get("CSVKAFKA_LOAD_COUNT", "20"))
    audit = testenv.state_dir / "logs" / "audit.log"
    result = run_load(kube_api, namespace, data, testenv.kafka_bootstrap, count,
                      audit if audit.exists() else None, timeout_s=600)
    figures = result.figures()
    for line in figures:
        print(line)
        record_figure(f"load {count}", line)
    # One row for the whole scenario: rows, losses and duplicates summed over the ingestions.
    # No random choice in it: seed 0.
    report_row(f"load: {count} ingestions at once", 0, 0, result.total(),
               f"{result.phases['Completed']}/{count} Completed",
               f"verified {result.verified}/{count}")
    assert result.phases["Completed"] == count, result.failed
    assert result.verified == count, result.not_verified
    assert result.no_job == 0, "a Job never showed on the watch"
    assert result.audit is not None, f"no audit log at {audit} (hack/testenv.sh turns it on)"
    assert not result.audit.unretried, result.audit.unretried
