"""The kopf handlers: thin wiring from events to the pure builders and phase machine.

CsvIngestion create/resume/spec-update -> :func:`reconcile` (which asks the guard before it
creates any child: a refused spec ends Failed with nothing created); worker Job events ->
:func:`job_event` (which reads a Job's pods once one has failed, to find an OOM kill).
Status writes go through :func:`ingest_worker.api.client.update_status` (read-compute-write
with a resourceVersion precondition), because the workers write the same status concurrently.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ingest_operator import GROUP, KIND, PLURAL, PREFIX, VERSION, builders, guard, kube, metrics
from ingest_operator.config import OperatorConfig
from ingest_operator.phases import (
    Action,
    Decision,
    JobState,
    OomKill,
    decide,
    find_oom_kill,
    job_patch,
    observe_job,
    pending_edit_message,
    pending_edit_patch,
    refused_patch,
    restart_requested,
    should_read_pods,
    should_stop_job,
    start_run_patch,
    suspend_patch,
)
from ingest_worker.api import PLAN_KIND
from ingest_worker.api.client import update_status
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.api.status import CsvIngestionStatus

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on a Job's pods by the API server


class _State:
    config: OperatorConfig = OperatorConfig()


STATE = _State()


def configure(config: OperatorConfig) -> None:
    STATE.config = config


def _kbody(raw: dict[str, Any]) -> kopf.Body:
    """A fresh API read as a kopf Body, for kopf.adopt() and event posting."""
    return kopf.Body(cast(kopf.RawBody, raw))


def _event(body: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """A Kubernetes Event on the CsvIngestion, and the same line in the operator's log."""
    meta = body["metadata"]
    log.log(
        logging.WARNING if warning else logging.INFO,
        "%s/%s %s: %s",
        meta["namespace"],
        meta["name"],
        reason,
        message,
    )
    (kopf.warn if warning else kopf.info)(_kbody(body), reason=reason, message=message)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _counted(name: str) -> Callable[[F], F]:
    """Counts a handler's errors in the reconcile-errors metric (kopf then retries it)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                metrics.RECONCILE_ERRORS.labels(handler=name).inc()
                raise

        return inner  # type: ignore[return-value]

    return wrap


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own prefix for everything kopf keeps on the object: annotations only (never spec),
    # so Argo CD sees no drift; status.kopf would be pruned by the structural schema anyway.
    # No handler needs a finalizer: ownerReferences let the garbage collector delete the Jobs,
    # and a finalizer would block deleting a namespace while the operator is down. Should kopf
    # ever add one (a deletion handler), it carries our name, not kopf's.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Watches end and restart regularly, so a silently dropped connection is noticed.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 8
    metrics.serve(STATE.config.metrics_port)


def _errors(e: ValidationError) -> str:
    """The errors a person reads: of a union (a type name or an object), only the branch the
    value was written as."""
    out: list[str] = []
    for err in e.errors(include_url=False):
        given = err.get("input")
        if (err["type"] == "enum" and isinstance(given, dict)) or (
                err["type"] in ("model_type", "dict_type") and isinstance(given, str)):
            continue
        loc = ".".join(str(p) for p in err["loc"] if "[" not in str(p))
        out.append(f"spec.{loc}: {err['msg']}")
    return "; ".join(out)


def _parse(body: dict[str, Any]) -> tuple[CsvIngestionSpec, CsvIngestionStatus, int]:
    spec = CsvIngestionSpec.model_validate(body.get("spec") or {})
    status = CsvIngestionStatus.model_validate(body.get("status") or {})
    return spec, status, int(body["metadata"].get("generation") or 1)


def _ensure_children(body: dict[str, Any], spec: CsvIngestionSpec, run: int, gen: int) -> bool:
    """Creates the worker's RBAC and the run's Job if missing; True if the Job was created."""
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    children: list[tuple[str, dict[str, Any]]] = []
    if spec.worker.service_account_name is None:
        children.append(("ServiceAccount", builders.build_service_account(name, ns)))
    children += [
        ("Role", builders.build_role(name, ns)),
        ("RoleBinding", builders.build_role_binding(name, ns, builders.worker_account(name, spec))),
    ]
    if spec.has_units:
        children.append((PLAN_KIND, builders.build_plan(name, ns)))
    for kind, child in children:
        kopf.adopt(child, owner=_kbody(body))
        kube.create_ok_if_exists(kind, child)
    job = builders.build_job(
        name,
        ns,
        spec,
        run=run,
        generation=gen,
        default_image=STATE.config.worker_image,
        image_pull_policy=STATE.config.worker_image_pull_policy,
    )
    kopf.adopt(job, owner=_kbody(body))
    return kube.create_ok_if_exists("Job", job)


def reconcile_ingestion(namespace: str, name: str) -> None:
    """Takes one CsvIngestion a step towards its spec (idempotent; safe to repeat)."""
    # What compute() decided on its last call (it runs again after a 409).
    seen: list[tuple[Decision, CsvIngestionSpec, CsvIngestionStatus, int]] = []

    def compute(body: dict[str, Any]) -> dict[str, Any] | None:
        seen.clear()
        try:
            spec, status, gen = _parse(body)
        except ValidationError as e:
            # What the CRD's schema cannot check (a columnTypes entry is a name or an object).
            status = CsvIngestionStatus.model_validate(body.get("status") or {})
            gen = int(body["metadata"].get("generation") or 1)
            return refused_patch(status, gen, f"invalid spec: {_errors(e)}", now())
        refusal = guard.check_worker(spec, STATE.config)
        decision = decide(gen, spec, status, refused=refusal is not None)
        seen[:] = [(decision, spec, status, gen)]
        if decision.action == Action.REFUSE and refusal is not None:
            return refused_patch(status, gen, refusal.message, now())
        if decision.action == Action.START_RUN:
            return start_run_patch(
                status,
                spec,
                run=decision.run,
                job_name=builders.job_name(name, decision.run),
                generation=gen,
                reset_checkpoint=decision.reset_checkpoint,
                now=now(),
            )
        if decision.action == Action.SUSPEND:
            return suspend_patch(status, gen, now())
        if decision.action == Action.REPORT_PENDING_EDIT:
            return pending_edit_patch(status, gen, now())
        return None

    body, patch = update_status(namespace, name, compute)
    if body is not None and not seen and patch is not None:
        _event(body, "Refused", str(patch["message"]), warning=True)
    if body is None or not seen:
        return
    ((decision, spec, status, gen),) = seen
    metrics.INGESTIONS.set(namespace, name, body.get("status") or {})
    if decision.action == Action.REFUSE:
        if patch is not None:
            _event(body, "Refused", str(patch["message"]), warning=True)
        if decision.stop_job and status.job_name and kube.delete_job(namespace, status.job_name):
            _event(body, "JobStopped", f"Deleted worker Job {status.job_name}: not allowed")
    elif decision.action == Action.START_RUN:
        if decision.reset_checkpoint:
            kube.clear_plan(namespace, name)  # before the Job: its index 0 plans again
        started = _ensure_children(body, spec, decision.run, gen)
        job = builders.job_name(name, decision.run)
        how = (
            "from the beginning"
            if decision.reset_checkpoint or decision.run == 1
            else (f"from row {status.checkpoint.row if status.checkpoint else 0}")
        )
        _event(
            body,
            "RunStarted",
            f"Run {decision.run}: created worker Job {job} ({how})"
            if started
            else f"Run {decision.run}: worker Job {job} already exists",
        )
    elif decision.action == Action.ENSURE_JOB:
        if _ensure_children(body, spec, decision.run, gen):
            _event(
                body,
                "JobRecreated",
                f"Run {decision.run}: recreated missing worker Job",
            )
    elif decision.action == Action.SUSPEND:
        if status.job_name and kube.delete_job(namespace, status.job_name):
            _event(
                body,
                "Suspended",
                f"Deleted worker Job {status.job_name}; checkpoint kept",
            )
    elif decision.action == Action.REPORT_PENDING_EDIT:
        _event(body, "SpecChangePending", pending_edit_message(status, gen), warning=True)
    elif decision.action == Action.IGNORE_EDIT:
        _event(
            body,
            "SpecChangeIgnored",
            "The ingestion is Completed; spec edits do not start a new run "
            "(raise spec.restart to ingest the file again from the beginning)",
            warning=True,
        )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@_counted("reconcile")
def reconcile(name: str, namespace: str | None, **_: Any) -> None:
    assert namespace is not None  # the CRD is namespaced
    reconcile_ingestion(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def track_status(type: str, name: str, namespace: str | None, status: kopf.Status,
                 **_: Any) -> None:
    """Keeps the metrics of every ingestion current: its phase and its totals."""
    metrics.INGESTIONS.set(namespace or "", name, None if type == "DELETED" else dict(status))


def _owner_name(body: dict[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion") == f"{GROUP}/{VERSION}":
            name: str = ref["name"]
            return name
    return None


def _oom_kill(namespace: str, job: str, job_status: Mapping[str, Any] | None) -> OomKill | None:
    """An OOM kill among the Job's pods, read only once one has failed.

    One namespaced list by label per event of a Job that has a failed pod (a few per retry),
    where a pod watch would stream every change of every worker pod, cluster-wide, to catch
    the rare OOM kill.
    """
    if not should_read_pods(job_status):
        return None
    try:
        pods = kube.list_pods(namespace, f"{JOB_NAME_LABEL}={job}")
    except ApiException as exc:
        # kopf does not retry event handlers: an unreadable pod list (a ClusterRole not yet
        # updated) costs the diagnosis, not the Job's failure or success.
        log.warning(
            "%s/%s: cannot list the Job's pods (%s %s)", namespace, job, exc.status, exc.reason
        )
        return None
    return find_oom_kill(pods, builders.WORKER_CONTAINER)


@kopf.on.event("batch", "v1", "jobs", labels={builders.LABEL_INGESTION: kopf.PRESENT})
@_counted("job")
def job_event(type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """Moves the owning CsvIngestion's phase with its current run's Job."""
    # type is None for Jobs listed when the watch (re)starts: a Job that finished while the
    # operator was down is seen there, so it is handled like any other event.
    if type == "DELETED" or namespace is None:
        return
    owner = _owner_name(dict(body))
    if owner is None:
        return
    try:
        run = int(body["metadata"]["labels"][builders.LABEL_RUN])
    except (KeyError, ValueError):
        return
    job = body["metadata"]["name"]
    job_status = body.get("status")
    obs = observe_job(job_status, _oom_kill(namespace, job, job_status))

    def compute(parent: dict[str, Any]) -> dict[str, Any] | None:
        _spec, status, _gen = _parse(parent)
        return job_patch(status, run, job, obs, now())

    parent, patch = update_status(namespace, owner, compute)
    if parent is None:
        return
    if patch is not None:
        phase = patch.get("phase")
        metrics.INGESTIONS.set(namespace, owner, parent.get("status") or {})
        message = str(patch.get("message", ""))
        if obs.state == JobState.FAILED:
            _event(parent, "Failed", message, warning=True)
        elif phase:
            _event(parent, str(phase), message)
    # Also when the status already said Failed: an operator that was restarted between the
    # status write and the deletion deletes the Job here.
    written = CsvIngestionStatus.model_validate(parent.get("status") or {})
    if should_stop_job(written, run, obs) and kube.delete_job(namespace, job):
        _event(
            parent,
            "JobStopped",
            f"Run {run}: deleted worker Job {job} instead of letting it retry: "
            "its next pods would hit the same memory limit",
        )
    if patch is not None and (
        obs.state == JobState.FAILED
        or (obs.state == JobState.SUCCEEDED and restart_requested(*_parse(parent)[:2]))
    ):
        # An edit made while the run was going applies now: that is the next run (after a
        # success, only a restart asked for meanwhile starts one).
        reconcile_ingestion(namespace, owner)
