"""Benchmark: the same CSV through the worker from S3 (moto on loopback) and from a local path.

    python bench/bench_sources.py                   # 3,000,000 rows (~190 MB), 3 runs each
    python bench/bench_sources.py --rows 1000000 --runs 1

Not a test: it prints figures, asserts nothing. Needs the test environment (``hack/testenv.sh
up``: Kafka and moto). Each run is a fresh ``csv-ingest run`` process into a fresh topic, local
and S3 alternating so both see the same machine state; the best run of each is compared (the
median is printed too). Throughput is file bytes over the worker's own duration (from reading
the header to the last acknowledged row); the process's wall time, which adds interpreter start
and imports, is printed alongside.

A remote source pays a fixed start-up cost the local path does not: importing smart-open (which
loads every transport's SDK, ~0.7 s of CPU here) and building the S3 client (~0.3 s). On a small
file that cost dominates the comparison; the default size makes it what it is in production,
a second against minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench import PRODUCER, generate  # noqa: E402  (the other benchmark's file and settings)

CSV_INGEST = str(Path(sys.executable).with_name("csv-ingest"))


@dataclass(frozen=True)
class Run:
    source: str
    seconds: float  # the worker's own duration
    wall: float
    rows: int
    worker_cpu: float  # CPU seconds of the worker process (user + system, children included)
    server_cpu: float  # CPU seconds moto spent meanwhile (0 for a local run)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (moto runs outside this process tree)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _moto_pid() -> int | None:
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    try:
        return int((state / "run" / "moto.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None


def _env_file() -> dict[str, str]:
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    out = subprocess.run(
        ["bash", "-c", f'source "{state}/env" && env -0'], check=True, capture_output=True
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def _duration(text: str) -> float:
    m = re.search(r"duration (?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", text)
    if m is None:
        raise RuntimeError(f"no duration in: {text}")
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s)


def ingest(url: str, bootstrap: str, env: dict[str, str], parallelism: int) -> Run:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-src-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=60)
    props = [a for k, v in PRODUCER.items() for a in ("--producer-property", f"{k}={v}")]
    cmd = [
        CSV_INGEST,
        "run",
        url,
        "--topic",
        topic,
        "--bootstrap-servers",
        bootstrap,
        "--parallelism",
        str(parallelism),
        "--log-level",
        "WARNING",
        *props,
    ]
    moto = _moto_pid()
    server0 = _cpu_seconds(moto) if moto else 0.0
    before = os.times()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    after = os.times()
    server = (_cpu_seconds(moto) if moto else 0.0) - server0
    worker_cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{url}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    rows = int(re.search(r"published (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    admin.delete_topics([topic])
    kind = url.split(":", 1)[0] if "://" in url else "local"
    return Run(kind, _duration(proc.stdout), wall, rows, worker_cpu, server)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=3_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--parallelism", type=int, default=2)
    args = p.parse_args()

    import boto3

    tenv = _env_file()
    endpoint = tenv["CSVKAFKA_S3_ENDPOINT"]
    bootstrap = tenv["KAFKA_BOOTSTRAP_SERVERS"]
    path = generate(args.rows)
    size = path.stat().st_size
    creds = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name="us-east-1",
    )
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(path), bucket, path.name)
    env = {**os.environ, **creds, "AWS_ENDPOINT_URL": endpoint}
    urls = {"local": str(path), "s3": f"s3://{bucket}/{path.name}"}

    print(
        f"file: {path.name}, {args.rows:,} rows, {size / 1e6:.1f} MB; "
        f"moto at {endpoint}; parallelism {args.parallelism}"
    )
    runs: dict[str, list[Run]] = {"local": [], "s3": []}
    for i in range(args.runs):
        for name, url in urls.items():
            r = ingest(url, bootstrap, env, args.parallelism)
            assert r.rows == args.rows, r
            runs[name].append(r)
            print(
                f"  run {i + 1} {name:5s}: {r.seconds:6.2f} s worker, {r.wall:6.2f} s wall, "
                f"{size / r.seconds / 1e6:6.1f} MB/s; CPU s: worker {r.worker_cpu:5.2f}, "
                f"moto {r.server_cpu:5.2f}"
            )

    def best(name: str) -> float:
        return min(r.seconds for r in runs[name])

    def median(name: str) -> float:
        return statistics.median(r.seconds for r in runs[name])

    print()
    print(f"{'':8s}{'best s':>9s}{'MB/s':>9s}{'rows/s':>12s}{'median s':>11s}")
    for name in ("local", "s3"):
        b = best(name)
        print(f"{name:8s}{b:9.2f}{size / b / 1e6:9.1f}{args.rows / b:12,.0f}{median(name):11.2f}")
    ratio = best("local") / best("s3")
    print(
        f"\nS3 throughput / local throughput: {ratio:.2f} (best), "
        f"{median('local') / median('s3'):.2f} (median)"
    )
    cores = os.cpu_count() or 1
    print(
        f"machine: {cores} CPUs, load average {os.getloadavg()[0]:.2f} at the end; moto, "
        "Kafka and the worker share them, so moto's CPU is taken from the worker"
    )
    s3.delete_object(Bucket=bucket, Key=path.name)
    s3.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
