"""`make demo`: a sample ingestion on the local cluster, with progress shown until it ends.

The environment (hack/testenv.sh) is already up, with the operator running as its Deployment
from the image built from this tree. This uploads a generated CSV file to the S3 server (moto),
applies a CsvIngestion that reads it with keys from a Secret, prints `kubectl get csvingestions`
until the ingestion completes, and reads the topic back. It then prepares the README's sample
(`manifests/sample-csvingestion.yaml`, pointed at local data) and leaves everything running.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "csvkafka-demo"
NAME = "orders-backfill"
TOPIC = "demo-orders"
BUCKET = "demo"
ROWS = int(os.environ.get("DEMO_ROWS", "500000"))
# moto accepts any key pair; a real cluster's Secret holds real ones.
DEMO_KEYS = {"AWS_ACCESS_KEY_ID": "AKIADEMO0000000000", "AWS_SECRET_ACCESS_KEY": "demo-secret",
             "AWS_REGION": "us-east-1"}


def load_env() -> dict[str, str]:
    """The environment's settings (`source .testenv/env` in a shell), so a fresh shell works."""
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    out = subprocess.run(["bash", "-c", f'source "{state}/env" && env -0'],
                         check=True, capture_output=True).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    os.environ.update(env)
    return env


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def make_csv(rows: int) -> bytes:
    rng = random.Random(42)
    lines = ["order_id,customer,country,quantity,price,note"]
    for i in range(rows):
        note = '"gift, wrapped"' if i % 50 == 0 else ""
        lines.append(f"{i},cust-{rng.randrange(10_000)},{rng.choice(['FR', 'DE', 'US', 'JP'])},"
                     f"{rng.randrange(1, 20)},{rng.randrange(100, 100_000) / 100},{note}")
    # A few rows that cannot be ingested: they are counted and set aside, not fatal.
    lines += ["bad-row-with-too-few-fields", f"{rows},cust-1,FR,not-a-number,1.0,"]
    return ("\n".join(lines) + "\n").encode()


def topic_size(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-size"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def secret(namespace: str, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "stringData": DEMO_KEYS}
    kubectl("apply", "-f", "-", input=json.dumps(body))


def prepare_sample(env: dict[str, str], s3: Any, state: Path) -> Path:
    """manifests/sample-csvingestion.yaml with its source and broker pointed at this
    environment: its object uploaded, its Secret created, its topics created."""
    sample = yaml.safe_load((ROOT / "manifests" / "sample-csvingestion.yaml").read_text())
    spec = sample["spec"]
    bucket, _, key = spec["source"]["url"].removeprefix("s3://").partition("/")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(make_csv(50_000)))
    secret(sample["metadata"]["namespace"], spec["source"]["secretRef"]["name"])
    spec["source"]["endpointUrl"] = env["CSVKAFKA_S3_ENDPOINT"]
    spec["kafka"]["bootstrapServers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
    # The local broker, as a production one, does not create a topic on first use.
    admin = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    topics = [spec["kafka"]["topic"], spec["kafka"]["deadLetterTopic"]]
    for future in admin.create_topics([NewTopic(t, 6, 1) for t in topics]).values():
        future.exception()  # None, or TOPIC_ALREADY_EXISTS from an earlier demo
    # The sample asks for a node with 2 CPUs and 1 GiB to spare: this one has 2 CPUs in all.
    spec["worker"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"},
                                   "limits": {"memory": "1Gi"}}
    out = state / "demo" / "sample-csvingestion.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# manifests/sample-csvingestion.yaml, pointed at the local environment\n"
                   + yaml.safe_dump(sample, sort_keys=False))
    return out


def main() -> None:
    env = load_env()
    state = Path(env["CSVKAFKA_TESTENV"])
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    s3 = boto3.client("s3", endpoint_url=env["CSVKAFKA_S3_ENDPOINT"],
                      aws_access_key_id=DEMO_KEYS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=DEMO_KEYS["AWS_SECRET_ACCESS_KEY"],
                      region_name=DEMO_KEYS["AWS_REGION"])
    print(f"==> uploading s3://{BUCKET}/orders.csv ({ROWS:,} rows) to the S3 server")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="orders.csv", Body=make_csv(ROWS))

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([TOPIC])[TOPIC].exception()  # a previous demo's rows would confuse counts
    time.sleep(1)
    admin.create_topics([NewTopic(TOPIC, 6, 1)])[TOPIC].exception()

    print("==> the operator, as its Deployment:")
    print(kubectl("-n", "csvkafka-system", "get", "deploy,pods", "-o", "wide").rstrip())
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("label", "--overwrite", "namespace", NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted")
    kubectl("-n", NAMESPACE, "delete", "csvingestion", NAME, "--ignore-not-found", "--wait=true")
    secret(NAMESPACE, "s3-credentials")
    manifest = {
        "apiVersion": "csvkafka.io/v1alpha1",
        "kind": "CsvIngestion",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "source": {"url": f"s3://{BUCKET}/orders.csv", "secretRef": {"name": "s3-credentials"},
                       "endpointUrl": env["CSVKAFKA_S3_ENDPOINT"]},
            "format": {"columnTypes": {"quantity": "int", "price": "float"}},
            "kafka": {"bootstrapServers": bootstrap, "topic": TOPIC, "keyColumns": ["order_id"]},
            "checkpoint": {"everyRows": 50_000, "everySeconds": 1},
        },
    }
    print(f"\n==> kubectl apply: CsvIngestion {NAME} -> topic {TOPIC}\n")
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    phase, started = "", time.monotonic()
    while time.monotonic() - started < 600:
        out = kubectl("-n", NAMESPACE, "get", "csvingestions")
        print(out.splitlines()[-1] if phase else out.rstrip(), flush=True)
        phase = kubectl("-n", NAMESPACE, "get", "csvingestion", NAME, "-o",
                        "jsonpath={.status.phase}") or "-"
        if phase in ("Completed", "Failed"):
            break
        time.sleep(1)
    print()
    status = json.loads(kubectl("-n", NAMESPACE, "get", "csvingestion", NAME, "-o", "json"))[
        "status"
    ]
    print(f"==> phase {status.get('phase')} in {time.monotonic() - started:.0f} s:"
          f" {status.get('message', '')}")
    print(f"    rows published {status.get('rowsPublished')}, failed {status.get('rowsFailed')},"
          f" checkpoint {status.get('checkpoint')}")
    print(f"==> topic {TOPIC} holds {topic_size(bootstrap, TOPIC):,} messages")
    print(f"==> the worker's log (kubectl -n {NAMESPACE} logs job/{NAME}-1), last lines:")
    print("\n".join(kubectl("-n", NAMESPACE, "logs", f"job/{NAME}-1", check=False)
                    .splitlines()[-3:]))
    if status.get("phase") != "Completed":
        sys.exit(1)
    sample = prepare_sample(env, s3, state)
    print(
        "\nThe cluster and the operator stay up. In a shell:\n"
        f"  source {state}/env\n"
        "  kubectl get csvingestions -A\n"
        f"  kubectl apply -f {sample.relative_to(ROOT) if sample.is_relative_to(ROOT) else sample}"
        "   # the README's sample, pointed at local data\n"
        "  kubectl get csvingestions -w\n"
        "`make testenv-down` stops everything."
    )


if __name__ == "__main__":
    main()
