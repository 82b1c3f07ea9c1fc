"""Benchmark: csv-ingest against kcat and the naive Python loop, side by side, in one run.

    python bench/bench.py                          # 1M rows of the 6-column file, lz4 and none
    python bench/bench.py --file wide --rows 2000000   # 12 columns, 105 B per line
    python bench/bench.py --compression none,lz4,zstd  # and bytes stored per row for each
    python bench/bench.py --rss-scaling            # the worker on 1M and 10M rows: peak RSS
    python bench/bench.py --start                  # process start -> first produce (5 runs)
    python bench/bench.py --only worker --only worker-eos --compression lz4   # exactly-once cost
    python bench/bench.py --only worker --only worker-avro --only kcat-avro   # JSON vs Avro

Contestants: ``kcat-same`` is kcat sending the worker's own messages (the same JSON bytes and
keys, written out beforehand by the worker's encoder), the ceiling for those bytes in C;
``kcat-raw`` sends the raw CSV lines; ``naive`` is csv + json.dumps + produce in Python;
``worker-eos`` is the worker with ``--exactly-once`` (one transaction per checkpoint interval);
``worker-avro`` the worker writing Avro (types inferred from 10,000 rows, the schema registered
in the environment's Schema Registry), and ``kcat-avro`` kcat sending those same Avro messages.
All use the same producer settings and partitioner, and the same compression in each round.

Not a test: it prints figures, asserts nothing. The CSV is generated reproducibly (seeded) and
cached under ~/.cache/csvkafka/bench. Peak RSS is sampled from /proc every 50 ms over the whole
process tree (sum), with the largest single process and the sum of PSS (shared pages counted
once) alongside.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CSVKAFKA_BENCH_CACHE", Path.home() / ".cache" / "csvkafka" / "bench"))
PY = sys.executable

# The same producer settings for all three, so the comparison is about the code path.
PRODUCER = {
    "enable.idempotence": "true",
    "acks": "all",
    "compression.type": os.environ.get("BENCH_COMPRESSION", "none"),
    "linger.ms": os.environ.get("BENCH_LINGER_MS", "5"),
    "batch.size": "1000000",
    "batch.num.messages": "10000",
    "partitioner": "murmur2_random",
}
KAFKA_DATA = ROOT / ".testenv" / "kafka" / "data"


def generate(rows: int, seed: int = 42) -> Path:
    """A CSV of 6 mixed columns: int, text (some quoted, with commas), float, bool, ts, code."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"bench-{rows}-s{seed}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                      "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"])
    with tmp.open("w", newline="") as f:
        f.write("id,name,amount,active,created_at,code\n")
        block = 100_000
        for base in range(0, rows, block):
            n = min(block, rows - base)
            ids = np.arange(base + 1, base + n + 1)
            w1 = words[rng.integers(0, len(words), n)]
            w2 = words[rng.integers(0, len(words), n)]
            quoted = rng.random(n) < 0.1
            amount = rng.random(n) * 10000
            active = rng.random(n) < 0.5
            secs = rng.integers(1_600_000_000, 1_700_000_000, n)
            code = rng.integers(0, 16**8, n)
            ts = np.datetime_as_string(secs.astype("datetime64[s]"), unit="s")
            lines = []
            for i in range(n):
                name = f'"{w1[i]}, {w2[i]}"' if quoted[i] else f"{w1[i]} {w2[i]}"
                lines.append(
                    f"{ids[i]},{name},{amount[i]:.2f},{'true' if active[i] else 'false'},"
                    f"{ts[i]}Z,{code[i]:08x}\n"
                )
            f.write("".join(lines))
    tmp.rename(path)
    return path


WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu")


def generate_wide(rows: int, seed: int = 7) -> Path:
    """12 columns, about 105 B per line: ids, a SKU, free text with commas (10% quoted, some
    with a doubled quote), amounts, timestamps, a status: an order export."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"wide-{rows}-s{seed}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    status = np.array(["new", "paid", "shipped", "returned"])
    with tmp.open("w", newline="") as f:
        f.write("order_id,customer_id,sku,description,qty,unit_price,discount,total,currency,"
                "created_at,updated_at,status\n")
        block = 100_000
        for base in range(0, rows, block):
            n = min(block, rows - base)
            cust = rng.integers(1, 500_000, n)
            sku = rng.integers(0, 16**6, n)
            w = words[rng.integers(0, len(words), (n, 3))]
            quoted = rng.random(n) < 0.1
            dq = rng.random(n) < 0.02
            qty = rng.integers(1, 20, n)
            price = rng.random(n) * 500
            disc = rng.random(n) * 0.3
            secs = rng.integers(1_600_000_000, 1_700_000_000, n)
            created = np.datetime_as_string(secs.astype("datetime64[s]"), unit="s")
            updated = np.datetime_as_string((secs + 3600).astype("datetime64[s]"), unit="s")
            st = status[rng.integers(0, 4, n)]
            lines = []
            for i in range(n):
                text = f"{w[i, 0]} {w[i, 1]}, {w[i, 2]}"
                if quoted[i]:
                    text = f'"{text} ""xl""",' if dq[i] else f'"{text}",'
                else:
                    text = text.replace(",", "") + ","
                total = qty[i] * price[i] * (1 - disc[i])
                lines.append(
                    f"{base + i + 1},{cust[i]},SKU-{sku[i]:06x},{text}{qty[i]},{price[i]:.2f},"
                    f"{disc[i]:.2f},{total:.2f},EUR,{created[i]}Z,{updated[i]}Z,{st[i]}\n"
                )
            f.write("".join(lines))
    tmp.rename(path)
    return path


# kcat splits its input on delimiters: Avro values are binary, so these are long and random.
AVRO_MSG_DELIM, AVRO_KEY_DELIM = "\\x01\\xe3\\x1f\\x9a\\x7c\\x02\\xb5\\xd8", "\\x01\\x7f\\xc1\\x13"
AVRO_INFER_ROWS = 10_000


def _delim(text: str) -> bytes:
    return text.encode().decode("unicode_escape").encode("latin-1")


def registry_url() -> str:
    return os.environ.get("CSVKAFKA_SCHEMA_REGISTRY_URL", "http://10.201.0.2:38081")


def worker_messages(path: Path, key: str, value_format: str = "json") -> Path:
    """The worker's own messages for ``path``, as kcat -K reads them (key TAB value per line,
    or for Avro key and message delimiters no message holds), made by the worker's encoder (and
    for Avro its schema, inferred and registered as the worker does): what ``kcat-same`` and
    ``kcat-avro`` send."""
    out = path.with_suffix(f".messages-{key}-{value_format}.txt")
    if out.exists():
        return out
    sys.path.insert(0, str(ROOT))
    from ingest_worker.api.spec import CsvIngestionSpec
    from ingest_worker.checkpoint import Checkpoint
    from ingest_worker.csv.chunks import cut_chunks
    from ingest_worker.csv.dialect import read_header, resolve_layout
    from ingest_worker.csv.encode import ChunkEncoder
    from ingest_worker.schema.settle import MemoryLedger, settle_source
    from ingest_worker.sources import CsvSource

    kafka = {"bootstrapServers": "-", "topic": f"bench-{path.stem}", "keyColumns": [key]}
    fmt: dict[str, object] = {}
    if value_format == "avro":
        kafka |= {"valueFormat": "avro", "schemaRegistry": {"url": registry_url()}}
        fmt = {"inferTypes": {"sampleRows": AVRO_INFER_ROWS}}
    spec = CsvIngestionSpec.model_validate({"source": {"url": str(path)}, "kafka": kafka,
                                            "format": fmt})
    source = CsvSource(str(path), spec.source.compression)
    msg_delim, key_delim = ((b"\n", b"\t") if value_format == "json"
                            else (_delim(AVRO_MSG_DELIM), _delim(AVRO_KEY_DELIM)))
    with path.open("rb") as f:
        header = read_header(f, spec.format, "utf-8")
        layout = resolve_layout(spec, header, source.url, source.version, "utf-8")
        layout = settle_source(spec, layout, source, header, MemoryLedger()).apply(layout)
        f.seek(header.data_offset)
        start = Checkpoint(byte_offset=header.data_offset, row=0, line=header.data_line,
                           source_url=source.url, source_version=source.version)
        enc = ChunkEncoder(layout)
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as w:
            for chunk in cut_chunks(f, layout, start, max_rows=100_000, max_bytes=4 << 20):
                e = enc.encode(chunk)
                for k, v in zip(e.batch.message_keys(), e.batch.message_values(), strict=True):
                    if msg_delim in v or key_delim in v:
                        raise RuntimeError("a message holds kcat's delimiter: change it")
                    w.write((k or b"") + key_delim + v + msg_delim)
    tmp.rename(out)
    return out


def value_bytes(path: Path, key: str, value_format: str) -> float:
    """Mean bytes of a value of the worker's messages (no key, no delimiters)."""
    msgs = worker_messages(path, key, value_format)
    delim = b"\n" if value_format == "json" else _delim(AVRO_MSG_DELIM)
    kdelim = b"\t" if value_format == "json" else _delim(AVRO_KEY_DELIM)
    data = msgs.read_bytes()
    n = data.count(delim)
    return (len(data) - n * len(delim) - sum(len(m.split(kdelim, 1)[0]) + len(kdelim)
                                             for m in data.split(delim)[:-1])) / n


def stored_bytes(topic: str) -> int:
    """Bytes of the topic's log segments on the local broker's disk (after a flush)."""
    return sum(p.stat().st_size for p in KAFKA_DATA.glob(f"{topic}-*/*.log"))


# --- RSS sampling over a process tree -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status_kb(pid: int, field: str, file: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Peak:
    rss_sum_kb: int = 0
    rss_max_kb: int = 0
    pss_sum_kb: int = 0
    procs: int = 0


def sample(pid: int, peak: Peak, done: threading.Event) -> None:
    n = 0
    while not done.is_set():
        pids = _tree(pid)
        rss = [_status_kb(p, "VmRSS") for p in pids]
        peak.rss_sum_kb = max(peak.rss_sum_kb, sum(rss))
        peak.rss_max_kb = max(peak.rss_max_kb, max(rss, default=0))
        peak.procs = max(peak.procs, len(pids))
        if n % 4 == 0:  # smaps_rollup is slower to read
            pss = sum(_status_kb(p, "Pss", "smaps_rollup") for p in pids)
            peak.pss_sum_kb = max(peak.pss_sum_kb, pss)
        n += 1
        time.sleep(0.05)


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    mb: float
    peak: Peak
    rc: int
    cpu_s: float = 0.0
    """User+system CPU seconds of the contestant's process tree."""
    broker_cpu_s: float | None = None
    """CPU seconds the broker spent meanwhile (when its pid is known)."""
    stored: int = 0
    """Bytes the topic's log took on the broker's disk."""

    @property
    def rows_s(self) -> float:
        return self.rows / self.seconds


def broker_pid() -> int | None:
    """The local broker's pid, from the test environment's status (for its CPU seconds)."""
    if os.environ.get("BENCH_BROKER_PID"):
        return int(os.environ["BENCH_BROKER_PID"])
    try:
        out = subprocess.run([str(ROOT / "hack" / "testenv.sh"), "status"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("kafka:") and "pid" in line:
            return int(line.rsplit("pid", 1)[1].strip(" )"))
    return None


def _cpu_of(pid: int | None) -> float:
    """User+system CPU seconds of a process and its reaped children (from /proc)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


BROKER_PID: int | None = None


def run_measured(
    name: str, cmd: list[str], rows: int, mb: float, env: dict[str, str], cwd: str | None = None
) -> Result:
    peak = Peak()
    done = threading.Event()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0 = _cpu_of(BROKER_PID)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    th = threading.Thread(target=sample, args=(proc.pid, peak, done), daemon=True)
    th.start()
    _, err = proc.communicate()
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1 = _cpu_of(BROKER_PID)
    done.set()
    th.join()
    if proc.returncode != 0:
        print(f"[{name}] exit {proc.returncode}\n{err.decode()[-2000:]}", file=sys.stderr)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return Result(name, rows, secs, mb, peak, proc.returncode, cpu,
                  None if BROKER_PID is None else b1 - b0)


def ensure_topic(bootstrap: str, partitions: int = 6) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=60)
    time.sleep(1.0)
    return name


def delete_topic(bootstrap: str, name: str) -> None:
    """Each run leaves ~100-250 MB in the broker: left to pile up (gigabytes after a few dozen
    runs) they slow the broker down, kcat by 3x here, and later runs stop being comparable."""
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([name], operation_timeout=60)[name].result(timeout=60)
    time.sleep(2.0)  # the broker deletes the log files shortly after


NAIVE = r"""
import csv, json, sys
from confluent_kafka import Producer
path, topic, bootstrap = sys.argv[1:4]
conf = dict(kv.split("=", 1) for kv in sys.argv[4:])
conf["bootstrap.servers"] = bootstrap
p = Producer(conf)
with open(path, newline="") as f:
    r = csv.reader(f)
    header = next(r)
    for row in r:
        v = json.dumps(dict(zip(header, row)))
        while True:
            try:
                p.produce(topic, v.encode(), row[0].encode())
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
assert p.flush(60) == 0
"""


def bench_one(
    kind: str, path: Path, rows: int, bootstrap: str, parallelism: int, compression: str,
    key: str, baseline: str | None = None,
) -> Result:
    mb = path.stat().st_size / 1e6
    topic = ensure_topic(bootstrap)
    env = dict(os.environ)
    props = [f"{k}={v}" for k, v in {**PRODUCER, "compression.type": compression}.items()]
    tree: str | None = None
    if kind in ("kcat-raw", "kcat-same", "kcat-avro"):
        cmd = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-l"]
        for p in props:
            cmd += ["-X", p]
        if kind == "kcat-same":
            cmd += ["-K", "\t", str(worker_messages(path, key))]
        elif kind == "kcat-avro":
            cmd += ["-D", AVRO_MSG_DELIM, "-K", AVRO_KEY_DELIM,
                    str(worker_messages(path, key, "avro"))]
        else:
            cmd.append(str(path))
    elif kind == "naive":
        cmd = [PY, "-c", NAIVE, str(path), topic, bootstrap, *props]
    else:
        ckpt = Path(tempfile.gettempdir()) / f"csvkafka-bench-ckpt-{topic}.json"
        cmd = [PY, "-m", "ingest_worker", "run", str(path), "--topic", topic,
               "--bootstrap-servers", bootstrap, "--key", key, "--checkpoint", str(ckpt),
               "--parallelism", str(parallelism), "--log-level", "WARNING",
               *os.environ.get("BENCH_WORKER_ARGS", "").split()]
        if kind == "worker-eos":
            # Exactly-once: the same run, one transaction per checkpoint interval.
            cmd += ["--exactly-once", "--transactional-id", f"bench-{topic}"]
        if kind == "worker-avro":
            cmd += ["--value-format", "avro", "--schema-registry", registry_url(),
                    "--infer-types", str(AVRO_INFER_ROWS), "--record-name", "bench.Row"]
        for p in props:
            cmd += ["--producer-property", p]
        # "before": the same command from another copy of the package (a before/after run);
        # run from that directory too, since ``python -m`` puts the cwd first on sys.path.
        tree = str(baseline if kind == "before" and baseline else ROOT)
        env["PYTHONPATH"] = tree
    try:
        r = run_measured(kind, cmd, rows, mb, env, cwd=tree)
        r.stored = stored_bytes(topic)
        return r
    finally:
        if kind in ("worker", "worker-eos", "worker-avro", "before"):
            ckpt.unlink(missing_ok=True)
        delete_topic(bootstrap, topic)


def report(results: list[Result]) -> None:
    print(f"{'':10} {'rows/s':>10} {'MB/s':>7} {'secs':>7} {'RSS sum':>9} {'RSS max':>9} "
          f"{'PSS sum':>9} {'procs':>5} {'CPU s/1M':>9} {'+broker':>8} {'B/row':>6}")
    for r in results:
        per_m = 1e6 / r.rows
        broker = "" if r.broker_cpu_s is None else f"{(r.cpu_s + r.broker_cpu_s) * per_m:8.2f}"
        print(f"{r.name:10} {r.rows_s:10,.0f} {r.mb / r.seconds:7.1f} {r.seconds:7.2f} "
              f"{r.peak.rss_sum_kb / 1024:8.0f}M {r.peak.rss_max_kb / 1024:8.0f}M "
              f"{r.peak.pss_sum_kb / 1024:8.0f}M {r.peak.procs:5d} {r.cpu_s * per_m:9.2f} "
              f"{broker:>8} {r.stored / r.rows:6.0f}" + ("" if r.rc == 0 else f"  (exit {r.rc})"))
    by = {r.name: r for r in results}
    for mine in ("worker", "worker-eos", "worker-avro", "before"):
        if mine in by:
            for other in ("kcat-same", "kcat-avro", "kcat-raw", "naive", "before", "worker"):
                if other in by and other != mine:
                    print(f"{mine}/{other}: {by[mine].rows_s / by[other].rows_s:.2f}x rows/s")
    if "worker" in by and "kcat-same" in by:
        w, k = by["worker"], by["kcat-same"]
        per_m = 1e6 / w.rows
        print(f"worker CPU - kcat-same CPU: {(w.cpu_s - k.cpu_s) * per_m:+.2f} s per 1M rows")


def bench_start(bootstrap: str, runs: int = 5) -> None:
    """Process start to the first produce, for the CLI on a small local file: the median of
    ``runs``, from the worker's own debug line (its wall clock) against the spawn time."""
    import json
    import statistics

    path = CACHE / "start-1000.csv"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(1000)))
    times = []
    for _ in range(runs):
        topic = ensure_topic(bootstrap, 1)
        t0 = time.time()
        out = subprocess.run([PY, "-m", "ingest_worker", "run", str(path), "--topic", topic,
                              "--bootstrap-servers", bootstrap, "--log-level", "DEBUG"],
                             capture_output=True, text=True, cwd=ROOT)
        delete_topic(bootstrap, topic)
        for line in out.stderr.splitlines():
            if '"First batch sent"' in line:
                sent = json.loads(line)["unix_time"]
                times.append(sent - t0)
                break
        else:
            print(out.stderr[-2000:], file=sys.stderr)
    print("start (process start -> first produce), s:", " ".join(f"{t:.3f}" for t in times))
    if times:
        print(f"median {statistics.median(times):.3f} s of {len(times)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--file", choices=["bench", "wide"], default="bench",
                    help="bench: 6 columns, 63 B per line; wide: 12 columns, 105 B per line")
    ap.add_argument("--only", action="append",
                    choices=["kcat-raw", "kcat-same", "kcat-avro", "naive", "worker",
                             "worker-eos", "worker-avro", "before"])
    ap.add_argument("--compression", default="lz4,none",
                    help="comma-separated rounds: none, lz4, zstd, gzip, snappy")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run 'before': the worker from DIR (a copy of an older package tree)")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--rss-scaling", action="store_true",
                    help="run the worker on 1M and 10M rows and compare peak RSS")
    ap.add_argument("--start", action="store_true", help="process start -> first produce")
    ap.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                                  "10.201.0.2:39092"))
    args = ap.parse_args()
    global BROKER_PID
    BROKER_PID = broker_pid()
    if args.start:
        bench_start(args.bootstrap_servers)
        return
    gen, key = (generate, "id") if args.file == "bench" else (generate_wide, "order_id")
    if args.rss_scaling:
        results = []
        for n in (1_000_000, 10_000_000):
            path = gen(n)
            r = bench_one("worker", path, n, args.bootstrap_servers, args.parallelism, "lz4", key)
            r.name = f"{n // 1_000_000}M"
            results.append(r)
        report(results)
        a, b = results
        print(f"peak RSS sum 10M/1M: {b.peak.rss_sum_kb / a.peak.rss_sum_kb:.3f}")
        return
    path = gen(args.rows)
    kinds = args.only or ["kcat-raw", "kcat-same", "naive",
                          *(["before"] if args.baseline else []), "worker", "worker-eos",
                          "kcat-avro", "worker-avro"]
    # Made before the clock runs.
    formats = ["json"] + (["avro"] if {"kcat-avro", "worker-avro"} & set(kinds) else [])
    for value_format in formats:
        worker_messages(path, key, value_format)
        print(f"{value_format} value: {value_bytes(path, key, value_format):.1f} B per row "
              "(what the broker stores before compression, key and record overhead aside)")
    print(f"file: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows), "
          f"broker {args.bootstrap_servers}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("producer settings (all):", " ".join(f"{k}={v}" for k, v in PRODUCER.items()
                                               if k != "compression.type"))
    print("CPU s/1M: user+sys seconds of the contestant per million rows; +broker: with the "
          f"broker's CPU meanwhile (pid {BROKER_PID}); B/row: bytes stored by the broker")
    for comp in args.compression.split(","):
        print(f"\n--- compression.type={comp}")
        report([bench_one(k, path, args.rows, args.bootstrap_servers, args.parallelism, comp,
                          key, args.baseline) for k in kinds])


if __name__ == "__main__":
    main()
