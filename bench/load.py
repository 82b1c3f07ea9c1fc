"""Load: N CsvIngestions applied at once, each a small file to a topic of its own.

    python bench/load.py                 # 200 (make load runs 200, then 1,000)
    python bench/load.py --count 1000    # what breaks first
    python bench/load.py --count 20      # what CI runs (tests/faults/test_load.py)

Needs the environment up (`hack/testenv.sh up`). Printed: how many Completed and verified;
apply -> Job created, p50 and p99 (the local time each create returned, to the local time the
Job's ADDED event came on a watch: the API's timestamps have whole seconds); the operator's
peak RSS and CPU (its metrics every second); API requests per second from the operator and
from the workers, and the 429s, with those that no later success of the same request followed,
from the API server's audit log (``$CSVKAFKA_TESTENV/logs/audit.log``, every request of a
service account at Metadata level); the most worker pods Pending at once, and the operator's
restarts. Workers request 100m CPU and 64Mi: the node has 2 cores, so about 18 run at once and
the scheduler queues the rest. With 5m, all of 200 ran at once and the node thrashed (a load
average of 86, 48 of 200 Completed after 8 minutes): the first thing 1,000 would break here is
this node, not the operator.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # imported as bench.load by tests/faults/test_load.py
    sys.path.append(_HERE)
from clusterlib import (  # noqa: E402
    GROUP,
    OPERATOR_METRICS_PORT,
    OPERATOR_USER,
    PLURAL,
    VERSION,
    DataVolume,
    api_client,
    create_topics,
    delete_topics,
    drop_namespace,
    ingestion_body,
    load_env,
    make_namespace,
    operator_pod,
    operator_restarts,
    percentile,
    prom_value,
    scrape,
    write_rows,
)

ROWS = 1_000
WORKER_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "16Mi"},
                    "limits": {"memory": "512Mi", "ephemeral-storage": "1Gi"}}
LABEL_INGESTION = "csvkafka.io/ingestion"  # ingest_operator.builders.LABEL_INGESTION
RETRY_WINDOW_S = 120.0
"""A 429 counts as retried when the same user's same request succeeds within this."""


# --- the operator's process, every second ----------------------------------------------------


@dataclass
class OperatorSampler:
    """The active operator's RSS and CPU seconds every second (its /metrics)."""

    samples: list[tuple[float, float, float]] = field(default_factory=list)
    """(monotonic time, RSS bytes, CPU seconds)."""
    errors: Counter[str] = field(default_factory=Counter)
    pods: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> OperatorSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        pod: dict[str, Any] | None = None
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                if pod is None:
                    pod = operator_pod()
                if pod is not None:
                    text = scrape(pod["status"]["podIP"], OPERATOR_METRICS_PORT, timeout=2)
                    rss = prom_value(text, "process_resident_memory_bytes")
                    cpu = prom_value(text, "process_cpu_seconds_total")
                    if rss is not None and cpu is not None:
                        self.samples.append((t, rss, cpu))
                        self.pods.add(pod["metadata"]["name"])
            except Exception as e:  # the operator restarting is a figure, not a crash here
                self.errors[type(e).__name__] += 1
                pod = None
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))

    def peak_rss_mib(self) -> float:
        return max((r for _, r, _ in self.samples), default=0.0) / 2**20

    def cpu_cores(self) -> tuple[float, float]:
        """Mean and peak (over one-second steps) CPU, in cores."""
        s = self.samples
        if len(s) < 2:
            return 0.0, 0.0
        steps = [(c1 - c0) / (t1 - t0) for (t0, _, c0), (t1, _, c1) in itertools.pairwise(s)
                 if t1 > t0 and c1 >= c0]  # c1 < c0: a new process
        mean = (s[-1][2] - s[0][2]) / (s[-1][0] - s[0][0]) if s[-1][2] >= s[0][2] else \
            sum(steps) / max(1, len(steps))
        return mean, max(steps, default=0.0)


# --- Jobs as they come, on a watch -------------------------------------------------------------


class JobWatch:
    """The local time each Job of ``ns`` was first seen (ADDED on a watch), by ingestion."""

    def __init__(self, api: Any, ns: str) -> None:
        self.api, self.ns = api, ns
        self.seen: dict[str, float] = {}
        self.relists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.ready = threading.Event()

    def __enter__(self) -> JobWatch:
        self._thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _note(self, job: Any, now: float) -> None:
        name = (job.metadata.labels or {}).get(LABEL_INGESTION)
        if name and name not in self.seen:
            self.seen[name] = now

    def _loop(self) -> None:
        from kubernetes import client, watch

        batch = client.BatchV1Api(self.api)
        rv = batch.list_namespaced_job(self.ns).metadata.resource_version
        self.ready.set()
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(batch.list_namespaced_job, self.ns, resource_version=rv,
                                   timeout_seconds=5, allow_watch_bookmarks=True):
                    obj = ev["object"]
                    rv = obj.metadata.resource_version
                    if ev["type"] == "ADDED":
                        self._note(obj, time.monotonic())
                    if self._stop.is_set():
                        break
            except client.ApiException as e:
                if e.status != 410:
                    time.sleep(0.5)
                    continue
                # Too old: list again (what was added meanwhile is stamped late, and counted).
                self.relists += 1
                now = time.monotonic()
                listed = batch.list_namespaced_job(self.ns)
                for job in listed.items:
                    self._note(job, now)
                rv = listed.metadata.resource_version
            except Exception:  # the connection dropped: watch again from where it was
                time.sleep(0.5)
            finally:
                w.stop()


# --- the audit log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFigures:
    seconds: float
    requests: dict[str, int]
    """Requests by class (operator, workers), each counted once (its audit id)."""
    peak_per_s: dict[str, int]
    throttled: dict[str, int]
    """429 answers by class."""
    unretried: list[str]
    """429s no later success of the same request followed within RETRY_WINDOW_S."""


def _audit_files(path: Path, since_wall: float) -> list[Path]:
    """The log and its rotated backups (audit-<time>.log) written since ``since_wall``."""
    rotated = sorted(p for p in path.parent.glob(f"{path.stem}-*{path.suffix}")
                     if p.stat().st_mtime >= since_wall)
    return [*rotated, path] if path.exists() else rotated


def _events(path: Path, since_wall: float) -> Iterator[dict[str, Any]]:
    for f in _audit_files(path, since_wall):
        with f.open() as lines:
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line being written as we read


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_figures(path: Path, ns: str, start_wall: float, end_wall: float) -> AuditFigures:
    """Requests of the operator and of the workers of ``ns`` between two wall-clock times."""
    worker_prefix = f"system:serviceaccount:{ns}:"
    seen: set[str] = set()
    requests: Counter[str] = Counter()
    per_s: dict[str, Counter[int]] = {"operator": Counter(), "workers": Counter()}
    throttled: Counter[str] = Counter()
    outcomes: dict[tuple[str, ...], list[tuple[float, int]]] = {}
    for ev in _events(path, start_wall):
        user = (ev.get("user") or {}).get("username", "")
        who = "operator" if user == OPERATOR_USER else \
            "workers" if user.startswith(worker_prefix) else None
        if who is None or ev.get("stage") not in ("ResponseComplete", "ResponseStarted", "Panic"):
            continue
        t = _ts(ev["requestReceivedTimestamp"])
        if not start_wall <= t <= end_wall:
            continue
        code = int((ev.get("responseStatus") or {}).get("code") or 0)
        ref = ev.get("objectRef") or {}
        key = (user, ev.get("verb", ""), ref.get("resource", ""), ref.get("namespace", ""),
               ref.get("name", ""), ref.get("subresource", ""))
        if ev.get("stage") != "ResponseStarted":
            outcomes.setdefault(key, []).append((t, code))
            if code == 429:
                throttled[who] += 1
        audit_id = ev.get("auditID", "")
        if audit_id in seen:
            continue
        seen.add(audit_id)
        requests[who] += 1
        per_s[who][int(t)] += 1
    unretried = []
    for request, answers in outcomes.items():
        for t, code in answers:
            if code == 429 and not any(t < t2 <= t + RETRY_WINDOW_S and c2 < 400
                                       for t2, c2 in answers):
                user, verb, *what = request
                unretried.append(f"{verb} {'/'.join(w for w in what if w)} by {user}")
    return AuditFigures(
        seconds=end_wall - start_wall,
        requests={k: requests[k] for k in ("operator", "workers")},
        peak_per_s={k: max(v.values(), default=0) for k, v in per_s.items()},
        throttled={k: throttled[k] for k in ("operator", "workers")},
        unretried=unretried,
    )


# --- one load run ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    count: int
    phases: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    """Ingestions not Completed: their phase and message."""
    verified: int = 0
    not_verified: dict[str, str] = field(default_factory=dict)
    apply_to_job: list[float] = field(default_factory=list)
    no_job: int = 0
    apply_errors: Counter[str] = field(default_factory=Counter)
    operator: OperatorSampler = field(default_factory=OperatorSampler)
    operator_restarts: int = 0
    audit: AuditFigures | None = None
    pending_peak: int = 0
    seconds: float = 0.0
    relists: int = 0
    notes: list[str] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)
    """The verifier's report of each Completed ingestion (ingest_worker.verify.VerifyReport)."""

    def total(self) -> Any:
        """The reports summed into one VerifyReport (rows, lost, foreign, duplicates)."""
        from ingest_worker.verify import VerifyReport

        total = VerifyReport(source=f"{len(self.reports)} files")
        for r in self.reports:
            total.rows_expected += r.rows_expected
            total.rows_present += r.rows_present
            total.rows_missing += r.rows_missing
            total.rows_mismatched += r.rows_mismatched
            total.rows_unexpected += r.rows_unexpected
            total.duplicates += r.duplicates
            total.messages += r.messages
        return total

    def figures(self) -> list[str]:
        p50, p99 = percentile(self.apply_to_job, 50), percentile(self.apply_to_job, 99)
        mean, peak = self.operator.cpu_cores()
        lines = [
            f"{self.count} CsvIngestions applied at once: {self.phases['Completed']} Completed, "
            f"{self.verified} verified, all done in {self.seconds:.0f} s",
            f"apply -> Job created: p50 {p50:.2f} s, p99 {p99:.2f} s, max "
            f"{max(self.apply_to_job, default=float('nan')):.2f} s ({self.no_job} without a "
            f"Job{f', {self.relists} watch relists' if self.relists else ''})",
            f"operator: peak RSS {self.operator.peak_rss_mib():.0f} MiB, CPU mean {mean:.2f} "
            f"cores, peak {peak:.2f} (1 s steps), restarts {self.operator_restarts}, pods "
            f"{len(self.operator.pods)}",
            f"worker pods Pending at once, at most: {self.pending_peak}",
        ]
        a = self.audit
        if a is not None:
            for who in ("operator", "workers"):
                lines.append(
                    f"API requests from the {who}: {a.requests[who] / max(a.seconds, 1e-6):.1f}/s "
                    f"mean, {a.peak_per_s[who]}/s peak, {a.requests[who]} in all; 429: "
                    f"{a.throttled[who]}")
            first = f" ({'; '.join(a.unretried[:5])})" if a.unretried else ""
            lines.append(f"429 not followed by a success within {RETRY_WINDOW_S:.0f} s: "
                         f"{len(a.unretried)}{first}")
        else:
            lines.append("API requests: no audit log")
        if self.apply_errors:
            lines.append(f"apply errors: {dict(self.apply_errors)}")
        if self.failed:
            lines.append(f"not Completed ({len(self.failed)}), first 5: " + "; ".join(
                f"{k}: {v}" for k, v in list(self.failed.items())[:5]))
        if self.not_verified:
            lines.append(f"not verified ({len(self.not_verified)}), first 3: " + "; ".join(
                f"{k}: {v}" for k, v in list(self.not_verified.items())[:3]))
        if self.operator.errors:
            lines.append(f"operator metrics unreachable: {dict(self.operator.errors)}")
        lines += self.notes
        return lines


def _pending(api: Any, ns: str) -> int:
    from kubernetes import client

    pods = client.CoreV1Api(api).list_namespaced_pod(ns, field_selector="status.phase=Pending")
    return len(pods.items)


def _statuses(api: Any, ns: str) -> dict[str, dict[str, Any]]:
    from kubernetes import client

    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL)["items"]
    return {o["metadata"]["name"]: dict(o.get("status") or {}) for o in items}


def run_load(api: Any, ns: str, data: DataVolume, bootstrap: str, count: int,
             audit_log: Path | None, rows: int = ROWS, timeout_s: float | None = None,
             verify_threads: int = 8) -> LoadResult:
    """``count`` ingestions applied at once in ``ns`` (claim ``data`` on ``data``), waited for,
    verified, with the figures of the run (see the module's docstring)."""
    from kubernetes import client

    from ingest_worker.verify import verify

    result = LoadResult(count)
    names = [f"load-{i:04d}" for i in range(count)]
    run_id = uuid.uuid4().hex[:6]
    topics = {n: f"{n}-{run_id}" for n in names}
    files = {n: write_rows(data.path / f"{n}.csv", rows, start=i * rows)
             for i, n in enumerate(names)}
    create_topics(bootstrap, list(topics.values()), partitions=1)
    custom = client.CustomObjectsApi(api)
    applied: dict[str, float] = {}
    timeout = timeout_s if timeout_s is not None else max(600.0, 3.0 * count)
    restarts0 = sum(operator_restarts().values())

    def apply(name: str) -> None:
        body = ingestion_body(name, data.source(files[name]), topics[name], bootstrap,
                              worker={"resources": WORKER_RESOURCES})
        for attempt in range(5):  # our own 429s are not the operator's: retried, counted
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                applied[name] = time.monotonic()
                return
            except client.ApiException as e:
                result.apply_errors[str(e.status)] += 1
                time.sleep(0.2 * 2**attempt)

    try:
        with JobWatch(api, ns) as jobs, result.operator:
            start_wall, t0 = time.time(), time.monotonic()
            with ThreadPoolExecutor(32) as pool:  # 32 creates in flight: "at once"
                list(pool.map(apply, names))
            print(f"applied {len(applied)} in {time.monotonic() - t0:.1f} s", flush=True)
            deadline = t0 + timeout
            st: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                st = _statuses(api, ns)
                result.pending_peak = max(result.pending_peak, _pending(api, ns))
                done = Counter(s.get("phase") for s in st.values())
                if done["Completed"] + done["Failed"] >= len(applied):
                    break
                time.sleep(2)
            result.seconds = time.monotonic() - t0
            end_wall = time.time()
            result.relists = jobs.relists
            for n, t in applied.items():
                if n in jobs.seen:
                    result.apply_to_job.append(max(0.0, jobs.seen[n] - t))
                else:
                    result.no_job += 1
        result.operator_restarts = sum(operator_restarts().values()) - restarts0
        for n in names:
            s = st.get(n, {})
            phase = str(s.get("phase") or "absent")
            result.phases[phase] += 1
            if phase != "Completed":
                result.failed[n] = f"{phase}: {str(s.get('message') or '')[:200]}"

        def check(n: str) -> tuple[str, Any]:
            return n, verify(str(files[n]), topics[n], bootstrap, source_url=data.url(files[n]),
                             timeout=120)

        completed = [n for n in names if n not in result.failed]
        with ThreadPoolExecutor(verify_threads) as pool:  # one consumer each, a few at a time
            for n, rep in pool.map(check, completed):
                result.reports.append(rep)
                if rep.ok and rep.duplicates == 0:  # no fault here: no duplicate either
                    result.verified += 1
                else:
                    result.not_verified[n] = rep.summary()[:300]
        if audit_log is not None and audit_log.exists():
            # The API server writes its audit events in batches: give the last ones a moment.
            time.sleep(2)
            result.audit = audit_figures(audit_log, ns, start_wall, end_wall)
    finally:
        delete_topics(bootstrap, list(topics.values()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rows", type=int, default=ROWS, help="rows of each file")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for all (default: 3 per ingestion, 600 at least)")
    args = parser.parse_args()
    env = load_env()
    api = api_client()
    audit = Path(env.get("CSVKAFKA_TESTENV") or os.environ["CSVKAFKA_TESTENV"]) / "logs" / \
        "audit.log"
    ns, data = make_namespace(api, "bench-load")
    try:
        result = run_load(api, ns, data, env["KAFKA_BOOTSTRAP_SERVERS"], args.count,
                          audit if audit.exists() else None, rows=args.rows,
                          timeout_s=args.timeout)
    finally:
        drop_namespace(api, ns, data)
    for line in result.figures():
        print(line)
    ok = (result.verified == args.count and not result.failed
          and (result.audit is None or not result.audit.unretried))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
