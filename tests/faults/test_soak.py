"""The soak of ``make soak`` (bench/soak.py, 20 minutes), for 2 minutes: one worker pod held at
a broker quota, its RSS, open fds and threads sampled every 10 s, their slopes within the
bounds bench/soak.py states; then the rest at full speed and the verifier.
``CSVKAFKA_SOAK_MINUTES`` runs it longer."""

from __future__ import annotations

import os

import pytest

from bench.soak import soak
from tests.conftest import TestEnv
from tests.faults.test_faults import report_row
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment


@pytest.mark.slow
def test_soak_rss_fds_and_threads_stay_flat(
    operator: OperatorDeployment,
    testenv: TestEnv,
    kube_api: object,
    namespace: str,
    data: DataVolume,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kafka's ConfigCommand (the quota) runs from the environment's jars.
    monkeypatch.setenv("CSVKAFKA_KAFKA_LIBS", testenv.environ["CSVKAFKA_KAFKA_LIBS"])
    minutes = float(os.environ.get("CSVKAFKA_SOAK_MINUTES", "2"))
    result = soak(kube_api, namespace, data, testenv.kafka_bootstrap, minutes)
    print(result.table())
    got = result.slopes()
    assert result.report is not None, result.errors
    # No random choice in this scenario: seed 0.
    report_row(f"soak {minutes:g} min at a broker quota", 0, 0, result.report, result.phase,
               f"slopes/min RSS {got.rss_mib:+.2f} MiB "
               f"fds {got.fds:+.2f} threads {got.threads:+.2f}")
    assert not result.errors, result.errors
    assert result.phase == "Completed" and len(result.pods) == 1, (result.phase, result.pods)
    assert result.report.ok, result.report.summary()
    assert result.report.duplicates == 0, result.report.summary()
    assert not result.over(), result.over()
