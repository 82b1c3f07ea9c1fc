"""Benchmark: one file in 1, 2 and 4 shards, each shard a worker process, in one run.

    python bench/scale.py                      # 2M rows of the bench file (6 columns)
    python bench/scale.py --rows 5000000 --shards 1,2,4,8

The plan is the worker's (``plan_shards``: quote parity, record-aligned starts, verified), and
each process runs one shard exactly as an index of the Indexed Job does (``run_ingestion`` with
its ``Span``), with the same producer settings as ``bench.py``. Printed: rows/s, wall seconds,
CPU seconds per 1M rows (the workers' processes, and with the broker's), and the speed-up
against 1 shard; kcat sending the worker's own messages runs in the same session as the
ceiling. Not a test: it asserts nothing. On this machine (2 cores shared with the broker) the
speed-up is bounded by the cores; what it shows is that the CPU per row stays flat as the
shards grow, so N nodes give N times one pod's rate until the broker, the topic's partitions or
the source's bandwidth is the limit.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    PRODUCER,
    PY,
    ROOT,
    _cpu_of,
    bench_one,
    broker_pid,
    delete_topic,
    ensure_topic,
    generate,
)

DRIVER = r"""
import json, sys
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.checkpoint import MemoryCheckpointStore
from ingest_worker.run import Span, run_ingestion
spec = CsvIngestionSpec.model_validate(json.loads(sys.argv[1]))
start, end, line = (int(x) if x != "-" else None for x in sys.argv[2:5])
r = run_ingestion(spec, MemoryCheckpointStore(), span=Span(start, end, line or 1))
sys.exit(r.exit_code)
"""


def shard_starts(path: Path, shards: int) -> list[tuple[int, int | None, int | None]]:
    from ingest_worker.plan.shards import SplitDialect, plan_shards

    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = plan_shards(lambda off, n: os.pread(fd, n, off), size,
                           SplitDialect(ord(","), ord('"'), None, True), -(-size // shards))
    finally:
        os.close(fd)
    ends: list[int | None] = [*plan.starts[1:], None]
    return list(zip(plan.starts, ends, plan.lines, strict=True))


def run_shards(path: Path, shards: int, bootstrap: str, compression: str,
               key: str, threads: int) -> tuple[float, float, float | None, int]:
    ranges = shard_starts(path, shards)
    topic = ensure_topic(bootstrap)
    spec = {"source": {"url": str(path)},
            "kafka": {"bootstrapServers": bootstrap, "topic": topic, "keyColumns": [key],
                      "producerProperties": {**PRODUCER, "compression.type": compression}},
            "worker": {"parallelism": threads}}
    import json

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker = broker_pid()
    b0 = _cpu_of(broker)
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CSVKAFKA_LOG_LEVEL": "WARNING"}
    procs = [subprocess.Popen([PY, "-c", DRIVER, json.dumps(spec), str(s),
                               "-" if e is None else str(e), "-" if ln is None else str(ln)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for s, e, ln in ranges]
    rcs = [p.wait() for p in procs]
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1 = _cpu_of(broker)
    delete_topic(bootstrap, topic)
    if any(rcs):
        for p in procs:
            err = p.stderr.read().decode()[-1500:] if p.stderr else ""
            print(f"shard exit {p.returncode}: {err}", file=sys.stderr)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return secs, cpu, None if broker is None else b1 - b0, len(ranges)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--compression", default="lz4")
    ap.add_argument("--threads", type=int, default=0,
                    help="worker threads per shard (default: the cores shared out, at least 1)")
    ap.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = ap.parse_args()
    if not args.bootstrap_servers:
        sys.exit("no broker: run `make testenv-up` (or pass --bootstrap-servers)")
    path = generate(args.rows)
    key = "id"
    kcat = bench_one("kcat-same", path, args.rows, args.bootstrap_servers, 2, args.compression,
                     key)
    print(f"{args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB, {args.compression}; "
          f"kcat-same {kcat.rows_s:,.0f} rows/s, {kcat.cpu_s * 1e6 / args.rows:.2f} CPU-s/1M")
    # What one worker process costs whatever its share (start, imports, connecting): from a
    # file of 1,000 rows. N shards pay it N times, a fixed cost the per-row figures separate.
    small = generate(1000)
    _, start_cpu, _, _ = run_shards(small, 1, args.bootstrap_servers, args.compression, key, 1)
    print(f"one worker process on 1,000 rows: {start_cpu:.2f} CPU-s (its fixed cost)")
    print(f"{'shards':>6} {'rows/s':>10} {'secs':>7} {'CPU s/1M':>9} {'+broker':>8} "
          f"{'speed-up':>8} {'CPU vs 1':>8} {'net vs 1':>8} {'/kcat':>6}")
    base: tuple[float, float, float] | None = None
    for n in (int(x) for x in args.shards.split(",")):
        threads = args.threads or max(1, (os.cpu_count() or 2) // n)
        secs, cpu, broker_cpu, got = run_shards(path, n, args.bootstrap_servers,
                                                args.compression, key, threads)
        rate, per_m = args.rows / secs, cpu * 1e6 / args.rows
        net = (cpu - got * start_cpu) * 1e6 / args.rows  # per row, the processes' starts out
        base = base or (rate, per_m, net)
        with_broker = "" if broker_cpu is None else f"{(cpu + broker_cpu) * 1e6 / args.rows:8.2f}"
        print(f"{got:>6} {rate:10,.0f} {secs:7.2f} {per_m:9.2f} {with_broker:>8} "
              f"{rate / base[0]:7.2f}x {per_m / base[1] - 1:+7.0%} {net / base[2] - 1:+7.0%} "
              f"{rate / kcat.rows_s:5.2f}x")


if __name__ == "__main__":
    main()
