"""``python -m ingest_worker.job_main``: the worker as a pod of the operator's Job.

It runs one ingestion run with the spec snapshot the operator put in ``CSVKAFKA_SPEC`` (or, if
absent, the resource's current spec), keeps its checkpoint and counters in the CsvIngestion's
status (:class:`~ingest_worker.checkpoint.kube.KubeStatusStore`), and exits with a code the Job's
podFailurePolicy understands (:mod:`ingest_worker.exitcodes`): 0 done, ``WORKER_EXIT_FATAL`` for
errors a retry cannot fix (the run fails at once, with the reason in status), anything else to
let the Job retry the pod.
"""

from __future__ import annotations

import os

# pydantic scans every installed distribution's entry points for plugins when it builds the
# first model (up to 0.1 s of a start); the worker uses none. Before pydantic is imported.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ingest_worker.api.spec import CsvIngestionSpec, Delivery
from ingest_worker.checkpoint.kube import AttemptBehind, KubeStatusStore, StaleRun
from ingest_worker.exitcodes import (
    EXIT_FENCED,
    WORKER_EXIT_FATAL,
    WORKER_EXIT_RETRY,
    worker_exit_code,
)
from ingest_worker.metrics import Metrics

if TYPE_CHECKING:
    from ingest_worker.kafka.offsets import CheckpointKey

log = logging.getLogger("ingest_worker.job")

PLAN_WAIT_SECONDS = 1800.0
"""How long an index waits for index 0 to record the plan (a huge file's quote pass takes a
read of the file)."""


class JobEnvError(Exception):
    """The pod's environment is not what the operator sets."""


@dataclass(frozen=True)
class JobEnv:
    name: str
    namespace: str
    run: int
    spec_json: str | None
    kafka_secret_dir: Path | None
    pod_name: str


def read_env(environ: Mapping[str, str]) -> JobEnv:
    missing = [
        k
        for k in ("CSVKAFKA_INGESTION_NAME", "CSVKAFKA_INGESTION_NAMESPACE", "CSVKAFKA_RUN")
        if not environ.get(k)
    ]
    if missing:
        raise JobEnvError(f"missing environment variables: {', '.join(missing)}")
    secret_dir = environ.get("CSVKAFKA_KAFKA_SECRET_DIR")
    return JobEnv(
        name=environ["CSVKAFKA_INGESTION_NAME"],
        namespace=environ["CSVKAFKA_INGESTION_NAMESPACE"],
        run=int(environ["CSVKAFKA_RUN"]),
        spec_json=environ.get("CSVKAFKA_SPEC") or None,
        kafka_secret_dir=Path(secret_dir) if secret_dir else None,
        pod_name=environ.get("CSVKAFKA_POD_NAME", ""),
    )


def with_kafka_secret(spec: CsvIngestionSpec, secret_dir: Path | None) -> CsvIngestionSpec:
    """Adds the mounted Secret's keys (librdkafka properties) to the producer properties."""
    if secret_dir is None or not secret_dir.is_dir():
        return spec
    props: dict[str, str] = {}
    for f in sorted(secret_dir.iterdir()):
        # Secret volumes hold ..data and ..timestamp symlinks besides the keys.
        if f.name.startswith(".") or not f.is_file():
            continue
        props[f.name] = f.read_text().strip()
    kafka = spec.kafka.model_copy(
        update={"producer_properties": {**spec.kafka.producer_properties, **props}}
    )
    return spec.model_copy(update={"kafka": kafka})


def _load_spec(env: JobEnv, store: KubeStatusStore) -> CsvIngestionSpec:
    if env.spec_json:
        return CsvIngestionSpec.model_validate_json(env.spec_json)
    return CsvIngestionSpec.model_validate(store.get()["spec"])


def _serve_metrics() -> Metrics:
    """The RFC's metrics on CSVKAFKA_WORKER_METRICS_PORT; a busy port is not worth failing.

    A pod that ends waits for one more scrape when something scrapes it
    (:meth:`Metrics.await_final_scrape`): its last counts reach Prometheus."""
    metrics = Metrics()
    port = int(os.environ.get("CSVKAFKA_WORKER_METRICS_PORT") or 0)
    if port:
        try:
            metrics.serve(port)
        except OSError as exc:
            log.warning("metrics not served on port %d: %s", port, exc)
    return metrics


def _last_scrape(metrics: Metrics) -> None:
    waited = metrics.await_final_scrape()
    log.info("Waited %.1fs for a last scrape of the metrics", waited)


def _run_units(
    env: JobEnv, spec: CsvIngestionSpec, store: KubeStatusStore, stop: threading.Event,
    txn_key: CheckpointKey | None,
) -> int:
    """This pod's index of a run with work units (see :mod:`ingest_worker.units_run`)."""
    from ingest_worker.api.units import UnitsStatus
    from ingest_worker.checkpoint.units import UnitsWriter
    from ingest_worker.csv.dialect import ConfigError
    from ingest_worker.exitcodes import EXIT_FENCED, EXIT_KAFKA, EXIT_OK
    from ingest_worker.planner import (
        PlanError,
        PlanStore,
        make_plan,
        plan_total_bytes,
        unit_kind,
    )
    from ingest_worker.sources import SourceError
    from ingest_worker.units_run import run_index, settle_plan

    index = int(os.environ.get("JOB_COMPLETION_INDEX") or 0)
    indexes = int(os.environ.get("CSVKAFKA_INDEXES") or 1)
    plans = PlanStore(env.namespace, env.name)
    writer = UnitsWriter(env.namespace, env.name, env.run,
                         max_lag_rows=spec.checkpoint.every_rows)
    try:
        plan = plans.load()
        if plan is None and index == 0:
            plan = make_plan(spec)
            settle_plan(spec, plan, store)
            plan = plans.save(plan)
            log.info("Recorded the plan: %d units (digest %s)", len(plan.units), plan.digest)
        elif plan is None:
            plan = plans.wait(stop.is_set, PLAN_WAIT_SECONDS)
        if index == 0:
            writer.initialise(UnitsStatus.begin(unit_kind(plan), len(plan.units),
                                                plan_total_bytes(plan), plan.digest))
        else:
            while (units := writer.read()) is None or units.plan != plan.digest:
                if stop.wait(1.0):
                    return WORKER_EXIT_RETRY
    except (PlanError, SourceError, ConfigError) as exc:
        store.fail(f"planning the run failed: {exc}")
        return WORKER_EXIT_FATAL
    metrics = _serve_metrics()
    result = run_index(spec, plan, index, indexes, writer, stop, metrics, txn_key, store)
    if not stop.is_set():  # a SIGTERM's grace period is not for waiting on Prometheus
        _last_scrape(metrics)
    log.info(result.message)
    if result.exit_code == EXIT_KAFKA:
        store.fail(result.message)
        return WORKER_EXIT_FATAL
    if result.exit_code == EXIT_FENCED:
        return EXIT_FENCED
    return 0 if result.exit_code == EXIT_OK else WORKER_EXIT_RETRY


def main() -> int:
    from ingest_worker.logs import setup_logging
    from ingest_worker.run import install_signal_handlers, run_ingestion, tune_gc
    from ingest_worker.sources import install_log_scrubbing

    setup_logging(os.environ.get("CSVKAFKA_LOG_LEVEL", "INFO"))
    # The pod's environment holds the source Secret: no log line may repeat it.
    install_log_scrubbing("ingest_worker")
    try:
        env = read_env(os.environ)
    except (JobEnvError, ValueError) as exc:
        log.error(str(exc))
        return WORKER_EXIT_FATAL
    spec = CsvIngestionSpec.model_validate_json(env.spec_json) if env.spec_json else None
    store = KubeStatusStore(
        env.namespace,
        env.name,
        env.run,
        source_url=spec.source.url if spec else "",
        max_lag_rows=spec.checkpoint.every_rows if spec else 100_000,
    )
    try:
        if spec is None:
            spec = _load_spec(env, store)
            store.source_url = spec.source.url
        spec = with_kafka_secret(spec, env.kafka_secret_dir)
        attempt = store.start()
        log.info(
            "Starting run %d attempt %d of %s/%s (pod %s)",
            env.run,
            attempt,
            env.namespace,
            env.name,
            env.pod_name,
        )
        stop = threading.Event()
        install_signal_handlers(stop)
        tune_gc()
        txn_key = None
        if spec.kafka.delivery is Delivery.EXACTLY_ONCE:
            from ingest_worker.kafka.offsets import CheckpointKey

            # The resource's uid: a deleted and re-created ingestion never resumes the old
            # one's checkpoint, nor shares its transactional ids.
            txn_key = CheckpointKey.of_ingestion(env.namespace, env.name,
                                                 store.get()["metadata"]["uid"], spec.restart)
        if spec.has_units:
            return _run_units(env, spec, store, stop, txn_key)
        metrics = _serve_metrics()
        result = run_ingestion(spec, store, stop=stop, metrics=metrics, txn_key=txn_key)
        if not stop.is_set():  # a SIGTERM's grace period is not for waiting on Prometheus
            _last_scrape(metrics)
    except StaleRun as exc:
        log.warning("stopping: %s", exc)
        return 0  # nothing left for this pod to do; the newer run owns the ingestion
    except AttemptBehind as exc:
        # Not 0: a success would complete the Job and stop the attempt that is ahead.
        log.warning("stopping: %s", exc)
        return WORKER_EXIT_RETRY
    except Exception as exc:  # an unexpected crash: record it, let the Job retry the pod
        log.exception("worker crashed")
        try:
            store.fail(f"worker crashed: {type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the error in status")
        return WORKER_EXIT_RETRY
    if result.exit_code == EXIT_FENCED:
        return EXIT_FENCED  # another attempt owns the ingestion: its status, not ours
    if not result.completed:
        try:
            store.fail(result.message)
        except StaleRun:
            return 0
    return worker_exit_code(result.completed, result.exit_code)


if __name__ == "__main__":
    sys.exit(main())
