"""Bad networks between the worker pods and their servers: Toxiproxy (tests/toxiproxy.py) in the
node's namespace, in front of the broker (a listener advertised at the proxy's address, so a
client's reconnections go through it too) and in front of the S3 store.

Each scenario runs an ingestion on the real node through the proxy, injects its faults on a
seeded schedule, and ends with the independent verifier: nothing lost, nothing foreign,
duplicates at most a checkpoint interval per interruption, and the run Completed. Each writes
its row to the fault report (tests/faults/test_faults.py).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest_worker.kafka.producer import BLACK_HOLE_DETECTION_S
from ingest_worker.verify import VerifyReport, id_prefix_for, verify
from tests.conftest import TestEnv, run_kubectl
from tests.faults.test_faults import EVERY_ROWS, Watcher, check_outcome, report_row, seed_for
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import Ingestions, ingestion, running_worker
from tests.sources.conftest import AWS_KEY_ID
from tests.toxiproxy import Toxiproxy

ROWS = 200_000


@pytest.fixture
def toxiproxy(testenv: TestEnv) -> Iterator[Toxiproxy]:
    proxy = Toxiproxy(testenv.environ["CSVKAFKA_TOXIPROXY_URL"])
    proxy.reset()
    yield proxy
    proxy.reset()


@pytest.fixture
def rows_csv(data: DataVolume) -> Path:
    return write_csv(data.path / "net.csv", ROWS)


def _spec(topic: str, bootstrap: str) -> dict[str, Any]:
    return {"kafka": {"bootstrapServers": bootstrap, "topic": topic},
            "checkpoint": {"everyRows": EVERY_ROWS, "everySeconds": 1},
            "worker": {"parallelism": 1, "backoffLimit": 3}}


def _progress_at(w: Watcher, size: int, fraction: float, timeout: float = 300) -> None:
    wait_for(f"{fraction:.0%} of the file", lambda: w.checkpoint() >= fraction * size
             or (w.samples and w.samples[-1][1] in ("Completed", "Failed")), timeout=timeout,
             interval=0.05)


def _finish(
    label: str, seed: int, interruptions: int, ingestions: Ingestions, name: str, w: Watcher,
    report: Callable[[], VerifyReport], extra: str = "",
) -> dict[str, Any]:
    st = ingestions.wait_phase(name, "Completed", timeout=600)
    rep = report()
    report_row(label, seed, interruptions, rep, st["phase"],
               f"attempts {st['attempts']}" + (f" | {extra}" if extra else ""))
    check_outcome(rep, interruptions, w)
    assert st["rowsPublished"] == rep.rows_expected
    return st


def _through_kafka_proxy(
    name: str, ingestions: Ingestions, testenv: TestEnv, csv: Path, data: DataVolume,
    topic: str,
) -> None:
    body = ingestion(name, data.source(csv), topic, testenv.kafka_bootstrap,
                     **_spec(topic, testenv.environ["CSVKAFKA_KAFKA_PROXIED_BOOTSTRAP"]))
    ingestions.create(body)


def _local_report(csv: Path, data: DataVolume, topic: str, bootstrap: str
                  ) -> Callable[[], VerifyReport]:
    return lambda: verify(str(csv), topic, bootstrap, source_url=data.url(csv), timeout=120)


# --- latency, bandwidth, resets, black holes between the worker and the broker -----------------


@pytest.mark.slow
def test_latency_200ms_with_spikes(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, data: DataVolume,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
) -> None:
    """200 ms each way (jitter 50 ms) for the whole run, and spikes of 2 s every few seconds."""
    seed = seed_for("net-latency")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    spikes = 0
    with toxiproxy.toxic("kafka", "latency", "downstream", latency=200, jitter=50), \
            toxiproxy.toxic("kafka", "latency", "upstream", latency=200, jitter=50):
        _through_kafka_proxy("lat", ingestions, testenv, rows_csv, data, topic)
        with Watcher(ingestions, "lat") as w:
            while ingestions.status("lat").get("phase") not in ("Completed", "Failed"):
                time.sleep(rng.uniform(2, 4))
                with toxiproxy.toxic("kafka", "latency", "downstream", latency=2000):
                    spikes += 1
                    time.sleep(rng.uniform(0.5, 1.5))
            _finish("N1. latency 200 ms +-50, 2 s spikes", seed, 0, ingestions, "lat", w,
                    _local_report(rows_csv, data, topic, testenv.kafka_bootstrap),
                    f"spikes {spikes}")


@pytest.mark.slow
def test_bandwidth_capped(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, data: DataVolume,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
) -> None:
    """1 MB/s from the worker to the broker: the producer's queue fills, the worker waits on it
    (backpressure), nothing times out."""
    seed = seed_for("net-bandwidth")
    topic = new_topic(partitions=3)
    with toxiproxy.toxic("kafka", "bandwidth", "upstream", rate=1000):
        _through_kafka_proxy("bw", ingestions, testenv, rows_csv, data, topic)
        with Watcher(ingestions, "bw") as w:
            _finish("N2. bandwidth 1 MB/s to the broker", seed, 0, ingestions, "bw", w,
                    _local_report(rows_csv, data, topic, testenv.kafka_bootstrap))


@pytest.mark.slow
def test_connections_reset_mid_produce(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, data: DataVolume,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
) -> None:
    """Five times, every connection to the broker is reset (TCP RST) as data crosses it, for
    half a second: produce requests die mid-flight and are sent again."""
    seed = seed_for("net-reset-produce")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    size = rows_csv.stat().st_size
    # Slowed to 2 MB/s so that the run lasts long enough for five resets mid-stream.
    with toxiproxy.toxic("kafka", "bandwidth", "upstream", rate=2000):
        _through_kafka_proxy("rst", ingestions, testenv, rows_csv, data, topic)
        resets = 0
        with Watcher(ingestions, "rst") as w:
            for point in sorted(rng.uniform(0.05, 0.85) for _ in range(5)):
                _progress_at(w, size, point)
                with toxiproxy.toxic("kafka", "reset_peer", "upstream", timeout=0):
                    time.sleep(0.5)
                resets += 1
            _finish("N3. connections reset mid-produce x5", seed, resets, ingestions, "rst", w,
                    _local_report(rows_csv, data, topic, testenv.kafka_bootstrap))


def _worker_log(ingestions: Ingestions, testenv: TestEnv, job: str) -> str:
    """The log of the Job's latest worker pod."""
    pod = wait_for("the worker pod", lambda: ingestions.worker_pods(job))[-1]
    return run_kubectl(testenv, "-n", ingestions.ns, "logs", pod.metadata.name,
                       check=False).stdout


def _first_log_after(log: str, since: dt.datetime, *needles: str) -> dt.datetime | None:
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        at = dt.datetime.fromisoformat(rec.get("time", "")).replace(tzinfo=dt.UTC)
        if at >= since.replace(microsecond=0) and any(n in rec.get("message", "")
                                                       for n in needles):
            return at
    return None


@pytest.mark.slow
def test_black_holed_broker_is_detected_in_bounded_time(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, data: DataVolume,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
) -> None:
    """The broker's connections stay open and go silent for 25 s (nothing comes back, nothing
    is closed): the producer gives up on the silent connection after the request timeout
    (``BLACK_HOLE_DETECTION_S``), not after TCP keepalive (hours), keeps retrying, and the run
    completes once the path is back."""
    seed = seed_for("net-black-hole")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    size = rows_csv.stat().st_size
    with toxiproxy.toxic("kafka", "bandwidth", "upstream", rate=2000):
        _through_kafka_proxy("hole", ingestions, testenv, rows_csv, data, topic)
        with Watcher(ingestions, "hole") as w:
            _progress_at(w, size, rng.uniform(0.1, 0.5))
            since = dt.datetime.now(dt.UTC)
            with toxiproxy.toxic("kafka", "timeout", "downstream", timeout=0):
                time.sleep(25)
            log = _worker_log(ingestions, testenv, "hole-1")
            detected = _first_log_after(log, since, "Timed out", "timed out")
            took = (detected - since).total_seconds() if detected else None
            print(f"[black hole] detected after {took} s (bound {BLACK_HOLE_DETECTION_S} s)")
            _finish("N4. broker black-holed 25 s", seed, 1, ingestions, "hole", w,
                    _local_report(rows_csv, data, topic, testenv.kafka_bootstrap),
                    f"detected after {took} s")
    assert took is not None, "the worker never reported the silent connection"
    # Log times are whole seconds: one second of slack each side.
    assert took <= BLACK_HOLE_DETECTION_S + 2


# --- resets in the middle of an object read -----------------------------------------------------


def _s3_ingestion(
    name: str, ingestions: Ingestions, testenv: TestEnv, s3: Any, bucket: str, csv: Path,
    topic: str, bootstrap: str, make_secret: Callable[[str, dict[str, str]], str],
) -> Callable[[], VerifyReport]:
    """Starts an ingestion of ``csv`` uploaded to S3, read through the proxy; returns its
    verification (event ids derive from the object's version, its ETag here)."""
    s3.upload_file(str(csv), bucket, "rows.csv")
    etag = s3.head_object(Bucket=bucket, Key="rows.csv")["ETag"].strip('"')
    make_secret(f"{name}-aws", {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": "k"})
    url = f"s3://{bucket}/rows.csv"
    src = {"url": url, "secretRef": {"name": f"{name}-aws"},
           "endpointUrl": testenv.environ["CSVKAFKA_S3_PROXIED_ENDPOINT"]}
    ingestions.create(ingestion(name, src, topic, testenv.kafka_bootstrap,
                                **_spec(topic, bootstrap)))
    return lambda: verify(str(csv), topic, testenv.kafka_bootstrap, source_url=url,
                          id_prefix=id_prefix_for(url, etag), timeout=120)


@pytest.mark.slow
def test_object_read_reset_resumes_inside_the_pod(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
    s3_bucket: tuple[Any, str], make_secret: Callable[[str, dict[str, str]], str],
) -> None:
    """The S3 store's connections are reset three times while the worker reads the object
    (slowed to 500 KB/s: the read lasts about ten seconds): the worker reads on from the last
    byte it consumed with a ranged GET, in the same pod (one attempt)."""
    seed = seed_for("net-reset-read")
    rng = random.Random(seed)
    s3, bucket = s3_bucket
    topic = new_topic(partitions=3)
    with toxiproxy.toxic("s3", "bandwidth", "downstream", rate=500):
        report = _s3_ingestion("rread", ingestions, testenv, s3, bucket, rows_csv, topic,
                               testenv.kafka_bootstrap, make_secret)
        resets = 0
        with Watcher(ingestions, "rread") as w:
            # The worker reads 8 MiB ahead of its checkpoint: the resets go by the clock, from
            # the moment its container runs, while the transfer is under way.
            wait_for("the worker", lambda: running_worker(ingestions, "rread-1"), timeout=120,
                     interval=0.05)
            started = time.monotonic()
            for at in sorted(rng.uniform(1.5, 7.0) for _ in range(3)):
                time.sleep(max(0.0, started + at - time.monotonic()))
                with toxiproxy.toxic("s3", "reset_peer", "downstream", timeout=0):
                    time.sleep(0.3)
                resets += 1
            log = _worker_log(ingestions, testenv, "rread-1")
            # Ours, or smart-open's own retry below it (S3's streaming reader reopens too).
            resumed = log.count("interrupted at byte") + log.count("before retry")
            st = _finish("N5. object read reset x3 (S3)", seed, resets, ingestions, "rread", w,
                         report, f"reads resumed in the pod {resumed}")
    assert st["attempts"] == 1, f"the resets cost pod restarts: {st['attempts']} attempts"
    assert resumed >= 1, "no read was cut: the resets missed the transfer"


# --- chaos --------------------------------------------------------------------------------------


def _chaos(toxiproxy: Toxiproxy, rng: random.Random, stop: threading.Event,
           log: list[str]) -> None:
    """Every 2-5 s, one fault on one of the two proxies for 0.5-3 s."""
    faults: list[tuple[str, str, str, dict[str, int]]] = [
        ("kafka", "latency", "downstream", {"latency": 300, "jitter": 100}),
        ("kafka", "bandwidth", "upstream", {"rate": 300}),
        ("kafka", "reset_peer", "upstream", {"timeout": 0}),
        ("kafka", "timeout", "downstream", {"timeout": 0}),
        ("s3", "latency", "downstream", {"latency": 500}),
        ("s3", "bandwidth", "downstream", {"rate": 200}),
        ("s3", "reset_peer", "downstream", {"timeout": 0}),
    ]
    while not stop.wait(rng.uniform(2, 5)):
        proxy, kind, stream, attrs = rng.choice(faults)
        with toxiproxy.toxic(proxy, kind, stream, **attrs):
            log.append(f"{proxy}:{kind}")
            stop.wait(rng.uniform(0.5, 3))


@pytest.mark.slow
def test_chaos_a_random_fault_every_few_seconds(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    rows_csv: Path, new_topic: Callable[..., str], toxiproxy: Toxiproxy,
    s3_bucket: tuple[Any, str], make_secret: Callable[[str, dict[str, str]], str],
) -> None:
    """From S3 through one proxy to the broker through the other, one fault at random every
    few seconds for the whole run."""
    seed = seed_for("net-chaos")
    rng = random.Random(seed)
    s3, bucket = s3_bucket
    topic = new_topic(partitions=3)
    injected: list[str] = []
    stop = threading.Event()
    chaos = threading.Thread(target=_chaos, args=(toxiproxy, rng, stop, injected), daemon=True)
    # The file read at 300 KB/s: the run lasts long enough for several faults.
    with toxiproxy.toxic("s3", "bandwidth", "downstream", rate=300):
        report = _s3_ingestion("chaos", ingestions, testenv, s3, bucket, rows_csv, topic,
                            testenv.environ["CSVKAFKA_KAFKA_PROXIED_BOOTSTRAP"], make_secret)
        with Watcher(ingestions, "chaos") as w:
            chaos.start()
            try:
                st = ingestions.wait_phase("chaos", "Completed", timeout=600)
            finally:
                stop.set()
                chaos.join(timeout=10)
            print(f"[chaos] faults: {injected}")
            _finish("N6. a random fault every 2-5 s (S3 and broker)", seed, len(injected),
                    ingestions, "chaos", w, report, f"faults {len(injected)}")
    assert st["phase"] == "Completed"
