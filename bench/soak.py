"""Soak: one worker pod ingesting for a long time, its RSS, open fds and threads sampled every
10 s; all three must stay flat.

    python bench/soak.py                 # 20 minutes (make soak)
    python bench/soak.py --minutes 2     # what CI runs (tests/faults/test_soak.py)

Needs the environment up (`hack/testenv.sh up`). One file, one pod, ``worker.parallelism: 1``,
checkpoints every 10,000 rows or 5 s, compression off (the quota counts bytes on the wire).
A run cannot last 20 minutes on its own at 0.5M rows/s (that is 600M rows, 15 GB), and a CPU
limit would starve more than the row loop; so the broker holds the rate, as a production
cluster does with a quota: a ``producer_byte_rate`` quota on the worker's ``client.id``
(``kafka-configs`` from the environment's Kafka jars). The file has more rows than the rate
gets through in the time asked; at the end of the time the quota is lifted and the rest goes at
full speed, then the verifier checks nothing was lost. The samples are the worker's process
read from /proc on the node (its host pid from crictl). Slopes are least-squares fits over the
samples after the warm-up; the script exits 1 when one is over its bound (see :func:`bounds`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # imported as bench.soak by tests/faults/test_soak.py
    sys.path.append(_HERE)
from clusterlib import (  # noqa: E402
    GROUP,
    PLURAL,
    VERSION,
    DataVolume,
    ProcSample,
    api_client,
    create_topics,
    delete_topics,
    drop_namespace,
    ingestion_body,
    load_env,
    make_namespace,
    proc_sample,
    running_worker_pid,
    slope_per_minute,
    write_rows,
)

BYTE_RATE = 512 * 1024
"""The quota: 512 KiB/s of uncompressed messages is about 5k rows/s of this file (~95 B each on
the wire): in 20 minutes ~6M rows, ~2,400 chunks of 2,500 rows and 240 checkpoints (every 5 s),
which is what a leak per chunk or per checkpoint needs to show; and a file the verifier reads
in minutes."""
MIN_WIRE_BYTES_PER_ROW = 80
"""Fewer bytes than any row of the file costs on the wire (its JSON value alone is ~85): the
file is sized with it, so it always outlasts the time asked."""
EVERY_ROWS = 10_000
"""Checkpoints every 10,000 rows or 5 s: chunks of 2,500 rows (a quarter of it), so the row
loop turns over about twice a second at this rate."""
INTERVAL_S = 10.0


@dataclass(frozen=True)
class Bounds:
    rss_mib: float
    fds: float
    threads: float


def bounds(window_min: float) -> Bounds:
    """The largest slope (per minute) that still counts as flat, over ``window_min`` minutes of
    samples after the warm-up.

    Over 20 minutes: RSS 1 MiB/min (a leak of one 2 MiB chunk's worth every two minutes would
    show; the worker's steady RSS is ~90 MB, and chunks coming and going move it by a few MiB,
    which averages out over 100 samples); fds 0.5/min (one socket or file left open every two
    minutes; a steady worker holds the same ones: the broker's connections, the metrics
    server's socket, the API server's); threads 0.1/min (one thread left behind in ten
    minutes: librdkafka's and the worker's threads are made once). In a shorter window the
    noise of one sample weighs more, so the bound is the larger of that and one noise step over
    the window: 4 MiB of RSS, 2 fds (a scrape's connection), 1 thread.
    """
    w = max(window_min, 1e-6)
    return Bounds(rss_mib=max(1.0, 4.0 / w), fds=max(0.5, 2.0 / w), threads=max(0.1, 1.0 / w))


@dataclass
class SoakResult:
    minutes: float
    samples: list[ProcSample] = field(default_factory=list)
    rows_at: list[tuple[float, int]] = field(default_factory=list)
    """(seconds, rowsPublished from status) beside each sample."""
    warmup_s: float = 0.0
    pods: set[str] = field(default_factory=set)
    phase: str = ""
    rows: int = 0
    report: Any = None
    """The verifier's report (ingest_worker.verify.VerifyReport)."""
    errors: list[str] = field(default_factory=list)

    def steady(self) -> list[ProcSample]:
        return [s for s in self.samples if s.t >= self.warmup_s]

    def slopes(self) -> Bounds:
        steady = self.steady()
        return Bounds(
            rss_mib=slope_per_minute([(s.t, s.rss_bytes / 2**20) for s in steady]),
            fds=slope_per_minute([(s.t, s.fds) for s in steady]),
            threads=slope_per_minute([(s.t, s.threads) for s in steady]),
        )

    def bounds(self) -> Bounds:
        steady = self.steady()
        window = (steady[-1].t - steady[0].t) / 60 if len(steady) > 1 else 0.0
        return bounds(window)

    def over(self) -> list[str]:
        """Each slope over its bound, in words; empty when all three are flat."""
        got, limit = self.slopes(), self.bounds()
        return [f"{what} slope {g:+.3f}/min > {lim:.3f}/min"
                for what, g, lim in (("RSS MiB", got.rss_mib, limit.rss_mib),
                                     ("open fds", got.fds, limit.fds),
                                     ("threads", got.threads, limit.threads))
                if g > lim]

    def table(self) -> str:
        rows = dict(self.rows_at)
        lines = [f"{'min':>6} {'rows published':>15} {'RSS MiB':>8} {'fds':>5} {'threads':>7}"]
        for s in self.samples:
            mark = "" if s.t >= self.warmup_s else "  (warm-up)"
            lines.append(f"{s.t / 60:6.2f} {rows.get(s.t, 0):15,} {s.rss_bytes / 2**20:8.1f} "
                         f"{s.fds:5d} {s.threads:7d}{mark}")
        got, limit = self.slopes(), self.bounds()
        lines.append(f"slopes after {self.warmup_s:.0f} s of warm-up, per minute: "
                     f"RSS {got.rss_mib:+.3f} MiB (bound {limit.rss_mib:.2f}), "
                     f"fds {got.fds:+.3f} (bound {limit.fds:.2f}), "
                     f"threads {got.threads:+.3f} (bound {limit.threads:.2f})")
        return "\n".join(lines)


def warmup_seconds(minutes: float) -> float:
    """Start, connections, the first window of chunks: the first 2 minutes, or a quarter of a
    shorter run."""
    return min(120.0, minutes * 60 / 4)


def set_quota(bootstrap: str, client_id: str, byte_rate: int | None) -> None:
    """A ``producer_byte_rate`` quota on ``client_id`` (None: removes it), with Kafka's own
    ConfigCommand from the environment's jars (the Python client has no quota API)."""
    libs = os.environ["CSVKAFKA_KAFKA_LIBS"]
    change = (["--add-config", f"producer_byte_rate={byte_rate}"] if byte_rate is not None
              else ["--delete-config", "producer_byte_rate"])
    proc = subprocess.run(
        ["java", "-cp", f"{libs}/*", "kafka.admin.ConfigCommand", "--bootstrap-server",
         bootstrap, "--alter", *change, "--entity-type", "clients", "--entity-name", client_id],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kafka-configs failed: {proc.stderr.strip()[-2000:]}")


def _status(api: Any, ns: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                                    name)
    return dict(obj.get("status") or {})


def soak(api: Any, ns: str, data: DataVolume, bootstrap: str, minutes: float,
         byte_rate: int = BYTE_RATE, interval_s: float = INTERVAL_S) -> SoakResult:
    """One ingestion in ``ns`` (whose claim ``data`` is ``data``) held at ``byte_rate`` for
    ``minutes``, sampled every ``interval_s``; then finished at full speed and verified."""
    from kubernetes import client

    from ingest_worker.verify import verify

    result = SoakResult(minutes, warmup_s=warmup_seconds(minutes))
    seconds = minutes * 60
    rows = int(seconds * byte_rate / MIN_WIRE_BYTES_PER_ROW)
    csv = write_rows(data.path / "soak.csv", rows)
    result.rows = rows
    name, topic = "soak", f"soak-{uuid.uuid4().hex[:8]}"
    client_id = f"csvkafka-{topic}"
    create_topics(bootstrap, [topic], partitions=3)
    set_quota(bootstrap, client_id, byte_rate)
    lifted = False
    try:
        body = ingestion_body(name, data.source(csv), topic, bootstrap,
                              kafka={"producerProperties": {"client.id": client_id,
                                                            "compression.type": "none"}},
                              checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 5})
        client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                                     body)
        found = None
        deadline = time.monotonic() + 180
        while found is None and time.monotonic() < deadline:
            found = running_worker_pid(ns, f"{name}-1")
            time.sleep(0.2)
        if found is None:
            raise RuntimeError("no worker pod ran within 180 s")
        pod, pid = found
        result.pods.add(pod)
        t0 = time.monotonic()
        while (now := time.monotonic() - t0) <= seconds:
            sample = proc_sample(pid, now)
            if sample is None:
                # One process for the whole soak: a new pod is a restart, which hides a leak.
                result.errors.append(f"the worker's process ended at {now / 60:.1f} min")
                break
            st = _status(api, ns, name)
            result.samples.append(sample)
            result.rows_at.append((sample.t, int(st.get("rowsPublished") or 0)))
            if st.get("phase") in ("Completed", "Failed"):
                result.errors.append(f"the ingestion ended ({st.get('phase')}) after "
                                     f"{now / 60:.1f} min, before the soak's end")
                break
            print(f"  {now / 60:5.1f} min: RSS {sample.rss_bytes / 2**20:.1f} MiB, "
                  f"fds {sample.fds}, threads {sample.threads}, rows "
                  f"{result.rows_at[-1][1]:,}", flush=True)
            time.sleep(max(0.0, interval_s - (time.monotonic() - t0 - now)))
        set_quota(bootstrap, client_id, None)  # the rest at full speed
        lifted = True
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            st = _status(api, ns, name)
            if st.get("phase") in ("Completed", "Failed"):
                break
            time.sleep(1)
        result.phase = str(st.get("phase"))
        pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"job-name={name}-1")
        result.pods |= {p.metadata.name for p in pods.items}
        result.report = verify(str(csv), topic, bootstrap, source_url=data.url(csv), timeout=300)
    finally:
        if not lifted:
            set_quota(bootstrap, client_id, None)
        delete_topics(bootstrap, [topic])
        csv.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--byte-rate", type=int, default=BYTE_RATE,
                        help="the broker's producer quota on the worker, bytes/s")
    args = parser.parse_args()
    env = load_env()
    api = api_client()
    ns, data = make_namespace(api, "bench-soak")
    try:
        started = time.monotonic()
        result = soak(api, ns, data, env["KAFKA_BOOTSTRAP_SERVERS"], args.minutes,
                      args.byte_rate)
        took = time.monotonic() - started
    finally:
        drop_namespace(api, ns, data)
    print(result.table())
    report = result.report
    print(f"phase {result.phase}, pods {len(result.pods)}, {result.rows:,} rows, whole run "
          f"{took / 60:.1f} min; verifier: {report.summary() if report else 'not run'}")
    problems = [*result.errors, *result.over()]
    if report is None or not report.ok:
        problems.append("the verifier found rows lost or foreign")
    if result.phase != "Completed" or len(result.pods) != 1:
        problems.append(f"phase {result.phase} with {len(result.pods)} pods "
                        "(expected Completed, 1)")
    for p in problems:
        print(f"NOT FLAT / FAILED: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
