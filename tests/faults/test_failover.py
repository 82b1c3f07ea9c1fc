"""Failover between the operator's two replicas: the Lease's holder is SIGKILLed (its container's
process, from the host, as a crash) at three moments of an ingestion, and the standby takes the
Lease over and finishes the work. Each moment asserts: one Job for the run, the ingestion
Completed, the verifier's verdict (nothing lost, nothing foreign, duplicates within a checkpoint
interval), the takeover time (from the kill to the new holder's acquireTime), and, from the API
server's audit log, that every write of a Job or a CsvIngestion came from the pod that held the
Lease at that moment.

The audit log is the API server's own (``$CSVKAFKA_TESTENV/logs/audit.log``, a policy that
records the operator's writes of jobs, csvingestions and leases at the Metadata level): both
replicas authenticate as the same ServiceAccount, and the pod-bound token puts the pod's name
in each event (``user.extra["authentication.kubernetes.io/pod-name"]``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import TestEnv
from tests.faults.test_faults import (
    Watcher,
    _create,
    _verify,
    _wait_progress,
    check_outcome,
    report_row,
    seed_for,
)
from tests.node import DataVolume, kill_container
from tests.operator.conftest import (
    OPERATOR_LEASE,
    OPERATOR_NS,
    OPERATOR_SA,
    OperatorDeployment,
    wait_for,
    write_csv,
)
from tests.operator.test_operator import Ingestions

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
POD_NAME = "authentication.kubernetes.io/pod-name"
WRITES = {"create", "update", "patch", "delete"}
# Audit and Lease times are MicroTime (microseconds), from one host's clock here: a tenure's
# bounds and a write's are compared to the microsecond, and this is that granularity.
TICK = timedelta(microseconds=1)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Tenure:
    """One holder's hold of the Lease: from its acquireTime to the next record's (a takeover,
    or a release, which writes its own acquireTime)."""

    holder: str
    transitions: int
    start: datetime
    end: datetime | None = None


@dataclass
class LeaseWatcher:
    """Reads the Lease every 50 ms and keeps every record it saw: who held it, from when."""

    api: client.ApiClient
    records: list[tuple[str, int, datetime]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaseWatcher:
        self._read()  # the tenure in place when the test starts
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _read(self) -> None:
        raw = client.CoordinationV1Api(self.api).read_namespaced_lease(
            OPERATOR_LEASE, OPERATOR_NS, _preload_content=False, _request_timeout=5)
        spec = json.loads(raw.data)["spec"]
        key = (spec.get("holderIdentity") or "", int(spec.get("leaseTransitions") or 0),
               _time(spec["acquireTime"]))
        if not self.records or self.records[-1] != key:
            self.records.append(key)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._read()
            except (ApiException, OSError) as exc:
                self.errors.append(str(exc))

    def holder(self) -> str:
        return self.records[-1][0]

    def tenures(self) -> list[Tenure]:
        """The holders in order; a tenure missed between two reads fails the test (each new
        holder's leaseTransitions is one more than the last one's)."""
        out: list[Tenure] = []
        for (holder, transitions, start), nxt in zip(
                self.records, [*self.records[1:], None], strict=True):
            if holder and out:
                assert transitions == out[-1].transitions + 1, f"a tenure missed: {self.records}"
            if holder:
                out.append(Tenure(holder, transitions, start, nxt[2] if nxt else None))
        return out

    def next_tenure(self, after: Tenure) -> Tenure:
        found: Tenure = wait_for("another tenure", lambda: next(
            (t for t in self.tenures() if t.transitions > after.transitions), None),
            timeout=120, interval=0.05)
        return found


@dataclass(frozen=True)
class Write:
    pod: str
    verb: str
    what: str
    received: datetime
    completed: datetime


def operator_writes(audit_log: Path, namespace: str, since: datetime) -> list[Write]:
    """The operator's writes of Jobs and CsvIngestions (status too) in ``namespace``, from the
    API server's audit log."""
    out: list[Write] = []
    for line in audit_log.read_text().splitlines():
        ev = json.loads(line)
        ref = ev.get("objectRef") or {}
        if (ev.get("stage") != "ResponseComplete" or ev["user"]["username"] != OPERATOR_USER
                or ev.get("verb") not in WRITES or ref.get("namespace") != namespace
                or ref.get("resource") not in ("jobs", "csvingestions")):
            continue
        received = _time(ev["requestReceivedTimestamp"])
        if received < since:
            continue
        pods = (ev["user"].get("extra") or {}).get(POD_NAME) or ["?"]
        what = "/".join(p for p in (ref.get("resource"), ref.get("name"),
                                    ref.get("subresource")) if p)
        out.append(Write(pods[0], ev["verb"], what, received, _time(ev["stageTimestamp"])))
    return out


def writes_outside_tenures(writes: list[Write], tenures: list[Tenure]) -> list[str]:
    """Each write whose request was not received and answered within one tenure of its pod."""
    bad = []
    for w in writes:
        if not any(t.holder == w.pod and t.start - TICK <= w.received
                   and (t.end is None or w.completed <= t.end + TICK) for t in tenures):
            bad.append(f"{w.pod} {w.verb} {w.what} at {w.received.isoformat()}"
                       f"..{w.completed.isoformat()}")
    return bad


@pytest.fixture
def audit_log(testenv: TestEnv) -> Path:
    path = testenv.state_dir / "logs" / "audit.log"
    if not path.exists():
        pytest.fail(f"no audit log at {path}: the API server must run with --audit-log-path and "
                    "--audit-policy-file (hack/testenv.sh)")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["job-creation", "running", "completion"])
def test_active_operator_killed_standby_takes_over(
    moment: str,
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
    new_topic: Callable[..., str],
    kube_api: client.ApiClient,
    audit_log: Path,
) -> None:
    seed = seed_for(f"failover-{moment}")
    rng = random.Random(seed)
    # Both replicas up (a replica killed by the previous moment is back, as a standby).
    replicas = operator.replicas()
    assert replicas >= 2, "failover needs a standby"
    wait_for("every replica ready", lambda: len(operator.pods()) == replicas, timeout=180)
    rows = 200_000
    csv = write_csv(data.path / "fo.csv", rows)
    topic = new_topic(partitions=3)
    with LeaseWatcher(kube_api) as lease, Watcher(ingestions, "fo") as w:
        before = lease.tenures()[-1]
        since = before.start
        _create(ingestions, "fo", csv, topic, testenv.kafka_bootstrap)
        if moment == "job-creation":
            time.sleep(rng.uniform(0.0, 0.4))
        elif moment == "running":
            _wait_progress(ingestions, "fo", rng, csv.stat().st_size)
        else:  # the worker is finishing: the Job completes while no replica leads
            wait_for("the last rows", lambda: int(
                (ingestions.status("fo").get("checkpoint") or {}).get("row", 0)) >= rows * 0.8,
                timeout=240, interval=0.02)
        victim = lease.holder()
        assert victim == before.holder, (victim, before)
        killed_at = datetime.now().astimezone()
        assert kill_container(OPERATOR_NS, victim, "operator") is not None, victim
        after = lease.next_tenure(before)
        takeover = (after.start - killed_at).total_seconds()
        print(f"[failover-{moment}] {victim} killed; {after.holder} took the Lease over "
              f"{takeover:.2f} s later (tenure {after.transitions})")
        st = ingestions.wait_phase("fo", "Completed", timeout=400)
        time.sleep(2)  # anything late (a second Job, a phase change) shows up here
    jobs = ingestions.jobs()
    report = _verify(csv, topic, testenv.kafka_bootstrap)
    report_row(f"7. active operator SIGKILLed at {moment}, standby took over", seed, 1, report,
               st["phase"], f"jobs {jobs} | takeover {takeover:.2f} s ({victim} -> "
               f"{after.holder})")
    check_outcome(report, 1, w)
    assert jobs == ["fo-1"], jobs
    assert ingestions.status("fo")["phase"] == "Completed"
    # The standby, which saw the last renewal first, takes over; the killed pod's restarted
    # container waits the Lease out like any other (its identity is the pod's, its tenure not).
    assert after.holder != victim, (victim, after)
    # Never raced: the holder renewed at most a retry period (2 s) before the kill, and the
    # standby waits a lease duration (15 s) from when it saw that renewal, which it sees, and
    # then finds expired, each within a retry period with jitter (2.4 s): 13 s to 20 s.
    assert 12.5 < takeover < 25, takeover
    # The audit log: every write of a Job or of this ingestion by the operator's identity
    # came from the pod that held the Lease when the API server received and answered it.
    tenures = lease.tenures()
    writes = operator_writes(audit_log, ingestions.ns, since)
    assert any(x.verb == "create" and x.what.startswith("jobs") for x in writes), (
        "the audit log holds no Job creation by the operator (is the policy in place, and do "
        f"its events carry {POD_NAME}?)")
    assert {x.pod for x in writes} <= {t.holder for t in tenures}, (writes, tenures)
    assert writes_outside_tenures(writes, tenures) == [], tenures
