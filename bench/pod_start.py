"""Pod start latency on the local cluster: `kubectl apply` of a CsvIngestion to its first row
in the topic, broken down by step, over several runs.

    python bench/pod_start.py [--runs 5] [--rows 10000]

Needs the environment up (`hack/testenv.sh up`: the node and the operator's Deployment). Each
run applies an ingestion of a small file on a hostPath volume and records, from the resource,
the Job, the pod and the topic: Job created, pod scheduled, container started, first row
produced (the message's CreateTime, stamped by the worker's producer), Completed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
from clusterlib import kubectl, load_env  # noqa: E402


def get(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def first_row_time(bootstrap: str, topic: str, timeout: float) -> float:
    """The smallest CreateTime (s) in the topic, once it holds a message."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        deadline, first = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                stamp = msg.timestamp()[1] / 1000
                first = stamp if first is None else min(first, stamp)
            elif first is not None:
                return first  # each partition's first message has been seen
        raise TimeoutError("no row in the topic")
    finally:
        consumer.close()


def one_run(env: dict[str, str], ns: str, rows: int, data: Path) -> dict[str, float]:
    name = f"start-{uuid.uuid4().hex[:6]}"
    topic = f"bench-start-{name}"
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    body = {
        "apiVersion": "csvkafka.io/v1alpha1", "kind": "CsvIngestion",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"source": {"url": f"file:///data/{data.name}",
                            "volume": {"claimName": "data", "mountPath": "/data"}},
                 "kafka": {"bootstrapServers": bootstrap, "topic": topic},
                 "worker": {"parallelism": 1}},
    }
    t0 = time.time()
    kubectl("apply", "-f", "-", input=json.dumps(body))
    first = first_row_time(bootstrap, topic, timeout=120)
    while get("get", "-n", ns, "csvi", name).get("status", {}).get("phase") not in ("Completed",
                                                                             "Failed"):
        time.sleep(0.2)
    done = time.time()
    job = get("get", "-n", ns, "job", f"{name}-1")
    (pod,) = get("get", "-n", ns, "pods", "-l", f"job-name={name}-1")["items"]
    conds = {c["type"]: ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"]}
    started = ts(pod["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"])
    admin.delete_topics([topic])[topic].result()
    return {
        # The API's timestamps have whole seconds: these three are +-1 s.
        "job created (+-1 s)": ts(job["metadata"]["creationTimestamp"]) - t0,
        "pod scheduled (+-1 s)": conds["PodScheduled"] - t0,
        "container up (+-1 s)": started - t0,
        "first row produced": first - t0,
        "completed": done - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    env = load_env()
    ns = f"bench-start-{uuid.uuid4().hex[:6]}"
    data = Path(env["CSVKAFKA_TESTENV"]) / "data" / ns
    data.mkdir(parents=True)
    data.chmod(0o755)
    csv = data / "rows.csv"
    csv.write_text("id,name,amount\n" + "".join(f"{i},n-{i},{i}.5\n" for i in range(args.rows)))
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"data-{ns}"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "hostPath": {"path": str(data)}, "storageClassName": "",
                  "claimRef": {"namespace": ns, "name": "data"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "data", "namespace": ns},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                  "resources": {"requests": {"storage": "1Gi"}}, "volumeName": f"data-{ns}"}},
    ]}))
    try:
        runs = [one_run(env, ns, args.rows, csv) for _ in range(args.runs)]
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
        kubectl("delete", "pv", f"data-{ns}", "--wait=false")
    print(f"apply -> step, seconds, {args.runs} runs of {args.rows:,} rows (median, min-max):")
    for step in runs[0]:
        vals = [r[step] for r in runs]
        print(f"  {step:22} {statistics.median(vals):6.2f}  ({min(vals):.2f}-{max(vals):.2f})")


if __name__ == "__main__":
    main()
