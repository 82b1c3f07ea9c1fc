"""`make demo`: a sample ingestion on the local environment, with progress shown until it ends.

It generates a CSV file, installs the CRD, runs the operator as a local process (in a cluster it
is the Deployment in manifests/), applies a CsvIngestion and prints `kubectl get csvingestions`
until the ingestion completes, then reads the topic back.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "csvkafka-demo"
NAME = "orders-backfill"
TOPIC = "demo-orders"
ROWS = int(os.environ.get("DEMO_ROWS", "500000"))


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def make_csv(path: Path, rows: int) -> None:
    if path.exists():
        return
    rng = random.Random(42)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("order_id,customer,country,quantity,price,note\n")
        for i in range(rows):
            note = '"gift, wrapped"' if i % 50 == 0 else ""
            f.write(
                f"{i},cust-{rng.randrange(10_000)},{rng.choice(['FR', 'DE', 'US', 'JP'])},"
                f"{rng.randrange(1, 20)},{rng.randrange(100, 100_000) / 100},{note}\n"
            )
    # A few rows that cannot be ingested: they are counted and set aside, not fatal.
    with path.open("a", encoding="utf-8") as f:
        f.write("bad-row-with-too-few-fields\n")
        f.write(f"{rows},cust-1,FR,not-a-number,1.0,\n")


def topic_size(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-size"})
    try:
        parts = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def main() -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    data = state / "demo" / f"orders-{ROWS}.csv"
    print(f"==> generating {data} ({ROWS:,} rows)")
    make_csv(data, ROWS)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([TOPIC])[TOPIC].exception()  # a previous demo's rows would confuse counts
    time.sleep(1)
    admin.create_topics([NewTopic(TOPIC, 6, 1)])[TOPIC].exception()

    print("==> installing the CRD and the demo namespace")
    kubectl("apply", "-f", str(ROOT / "crds" / "csvingestion.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/csvingestions.csvkafka.io")
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl(
        "label",
        "--overwrite",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    kubectl("-n", NAMESPACE, "delete", "csvingestion", NAME, "--ignore-not-found", "--wait=true")

    print("==> starting the operator (a local process here; a Deployment in a cluster)")
    log = (state / "logs" / "demo-operator.log").open("a")
    operator = subprocess.Popen(
        [sys.executable, "-m", "ingest_operator"],
        env={
            **os.environ,
            "CSVKAFKA_WATCH_NAMESPACES": NAMESPACE,
            "CSVKAFKA_METRICS_PORT": "0",
            "CSVKAFKA_HEALTH_PORT": "0",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        manifest = {
            "apiVersion": "csvkafka.io/v1alpha1",
            "kind": "CsvIngestion",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "source": {"url": str(data)},
                "format": {"columnTypes": {"quantity": "int", "price": "float"}},
                "kafka": {
                    "bootstrapServers": bootstrap,
                    "topic": TOPIC,
                    "keyColumns": ["order_id"],
                },
                "checkpoint": {"everyRows": 50_000, "everySeconds": 1},
            },
        }
        print(f"==> kubectl apply: CsvIngestion {NAME} -> topic {TOPIC}\n")
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        phase, started = "", time.monotonic()
        while time.monotonic() - started < 600:
            out = kubectl("-n", NAMESPACE, "get", "csvingestions")
            print(out.splitlines()[-1] if phase else out.rstrip(), flush=True)
            phase = kubectl(
                "-n", NAMESPACE, "get", "csvingestion", NAME, "-o", "jsonpath={.status.phase}"
            )
            if phase in ("Completed", "Failed"):
                break
            time.sleep(1)
        print()
        status = json.loads(kubectl("-n", NAMESPACE, "get", "csvingestion", NAME, "-o", "json"))[
            "status"
        ]
        print(f"==> phase {status.get('phase')}: {status.get('message', '')}")
        print(
            f"    rows published {status.get('rowsPublished')}, failed {status.get('rowsFailed')},"
            f" checkpoint {status.get('checkpoint')}"
        )
        print(f"==> topic {TOPIC} holds {topic_size(bootstrap):,} messages")
        if status.get("phase") != "Completed":
            sys.exit(1)
        print(
            "\nThe environment stays up: `source .testenv/env` and try kubectl yourself;"
            " `make testenv-down` stops it."
        )
    finally:
        operator.terminate()
        operator.wait(timeout=30)


if __name__ == "__main__":
    main()
