"""Bad rows by the million, on this host: a clean file and the same rows 90% bad, side by side.

    python bench/bad_rows.py                  # 2,000,000 rows, 2 rounds
    python bench/bad_rows.py --rows 400000    # what tests/faults/test_bad_rows.py runs in a pod

Needs the broker up (`hack/testenv.sh up kafka` is enough). Each round runs the worker's CLI
(`python -m ingest_worker run`, 3 partitions, `amount` a float) three times:

* **clean**: every row good;
* **90% bad, dead-lettered**: what the issue measures, every bad row to a dead-letter topic;
* **90% bad, counted only**: no dead-letter topic, so the difference is what producing the dead
  letters costs.

Printed: rows/s of the run (its "Finished file" line: the run, not the process's start), the
process's CPU seconds (user + system, librdkafka's threads included), and each rate over the
clean file's of the same round.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from clusterlib import (
    ROOT,
    create_topics,
    delete_topics,
    finished_rate,
    load_env,
    write_mostly_bad,
    write_rows,
)


@dataclass
class Run:
    label: str
    rows_per_s: float
    cpu_s: float


def run_worker(label: str, csv: Path, bootstrap: str, topic: str, dlq: str | None) -> Run:
    args = [sys.executable, "-m", "ingest_worker", "run", str(csv), "--topic", topic,
            "--bootstrap-servers", bootstrap, "--type", "amount=float", "--max-error-ratio", "1"]
    if dlq:
        args += ["--dead-letter-topic", dlq]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{label}: the worker failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(label, finished_rate(done.stdout + done.stderr), cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    bootstrap = load_env()["KAFKA_BOOTSTRAP_SERVERS"]
    with tempfile.TemporaryDirectory(prefix="bench-bad-rows-") as tmp:
        clean = write_rows(Path(tmp) / "clean.csv", args.rows)
        bad, bad_lines = write_mostly_bad(Path(tmp) / "bad.csv", args.rows)
        print(f"{args.rows:,} rows; {len(bad_lines):,} bad in the second file")
        # Untimed: a broker just started compiles its hot paths during its first runs, which
        # would flatter whichever run comes second.
        warm = [f"bench-bad-warm-{uuid.uuid4().hex[:6]}-{t}" for t in ("rows", "dlq")]
        create_topics(bootstrap, warm, partitions=3)
        try:
            run_worker("warm-up", clean, bootstrap, warm[0], None)
            run_worker("warm-up", bad, bootstrap, warm[0], warm[1])
        finally:
            delete_topics(bootstrap, warm)
        print("| round | run | rows/s | CPU s | rate / clean |\n| --- | --- | --- | --- | --- |")
        for n in range(1, args.rounds + 1):
            tag = uuid.uuid4().hex[:6]
            topics = [f"bench-bad-{tag}-{t}" for t in ("clean", "dl", "dlq", "counted")]
            create_topics(bootstrap, topics, partitions=3)
            try:
                runs = [
                    run_worker("clean", clean, bootstrap, topics[0], None),
                    run_worker("90% bad, dead-lettered", bad, bootstrap, topics[1], topics[2]),
                    run_worker("90% bad, counted only", bad, bootstrap, topics[3], None),
                ]
            finally:
                delete_topics(bootstrap, topics)
            for r in runs:
                print(f"| {n} | {r.label} | {r.rows_per_s:,.0f} | {r.cpu_s:.1f} | "
                      f"{r.rows_per_s / runs[0].rows_per_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
