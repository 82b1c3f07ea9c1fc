"""The phase machine, as pure functions over the spec, the status and the Job's state.

Pending -> InProgress -> Completed, or -> Failed. A spec edit on a Failed ingestion starts a
new run (resuming from the checkpoint unless the source URL changed); an edit while running is
reported and applies to the next run; ``suspend`` deletes the Job and keeps the checkpoint.
Raising ``spec.restart`` above ``status.observedRestart`` starts a new run from the beginning,
even from Completed (see :func:`restart_requested`).
A worker pod killed for running out of memory fails the run at once (see :func:`observe_job`).
A spec the operator's guard refuses (``guard.check_worker``) goes to Failed with no worker.
Every function returns a status merge patch (made by ``status_patch``, so camelCase as the CRD
says) or a decision; the handlers do the I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.api.status import (
    AttemptRecord,
    Condition,
    ConditionStatus,
    CsvIngestionStatus,
    Phase,
    status_patch,
    with_attempt,
)
from ingest_worker.api.units import UnitsStatus, is_finished, retry_failed

READY = "Ready"
PROGRESSING = "Progressing"
FAILED = "Failed"
REASON_SUSPENDED = "Suspended"
REASON_REFUSED = "WorkerNotAllowed"
REASON_OOM_KILLED = "OOMKilled"  # the kubelet's reason for a container the kernel OOM-killed
MEMORY_LIMIT_FIELD = "spec.worker.resources.limits.memory"
# The worker's rate and ETA, removed wherever no worker of the run is left to update them.
NO_RATE: dict[str, Any] = {"rows_per_second": None, "eta": None}


class JobState(enum.Enum):
    PENDING = "pending"  # created, no pod running yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class OomKill:
    """A worker container the kernel killed for going over its memory limit."""

    pod: str
    memory_limit: str | None  # the container's resources.limits.memory; None if it had none

    def message(self) -> str:
        if self.memory_limit is None:
            return (
                f"worker pod {self.pod} ran out of memory ({REASON_OOM_KILLED} with no memory "
                f"limit set: the node ran short); set {MEMORY_LIMIT_FIELD} and requests.memory "
                "to what the worker needs, so it runs on a node that has it: the edit starts a "
                "new run, which resumes from the checkpoint"
            )
        return (
            f"worker pod {self.pod} ran out of memory ({REASON_OOM_KILLED} at its memory limit "
            f"of {self.memory_limit}); raise {MEMORY_LIMIT_FIELD} above {self.memory_limit}: "
            "the edit starts a new run, which resumes from the checkpoint"
        )


@dataclass(frozen=True)
class JobObservation:
    state: JobState
    reason: str = ""
    message: str = ""
    oom: OomKill | None = None
    """A worker pod of the Job was OOM-killed: the run has failed, whatever the Job does next."""
    job_unfinished: bool = False
    """With ``oom``: the Job itself has not finished, and would retry the pod."""


def should_read_pods(job_status: Mapping[str, Any] | None) -> bool:
    """Whether the Job's pods are worth a read: one has failed and the Job did not complete.

    Only the pods' container states tell an OOM kill from any other SIGKILL (both exit 137).
    """
    job_status = job_status or {}
    if _observe_job(job_status).state == JobState.SUCCEEDED:
        return False
    # A failed pod is first listed as uncounted, then counted in `failed`.
    uncounted = (job_status.get("uncountedTerminatedPods") or {}).get("failed") or []
    return (job_status.get("failed") or 0) > 0 or bool(uncounted)


def find_oom_kill(pods: Iterable[Mapping[str, Any]], container: str) -> OomKill | None:
    """The first of these pods (API dicts) whose ``container`` was OOM-killed, or None.

    Only the worker container counts: its limit is the one spec.worker.resources sets (an
    injected sidecar running out of memory is not the worker's fault, and stays retriable).
    ``lastState`` covers a container restarted in place.
    """
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != container:
                continue
            states = (cs.get("state") or {}, cs.get("lastState") or {})
            if any((s.get("terminated") or {}).get("reason") == REASON_OOM_KILLED for s in states):
                return OomKill(
                    pod=(pod.get("metadata") or {}).get("name") or "?",
                    memory_limit=_memory_limit(pod, container),
                )
    return None


def _memory_limit(pod: Mapping[str, Any], container: str) -> str | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            limit: str | None = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            return limit
    return None


def observe_job(job_status: Mapping[str, Any] | None, oom: OomKill | None = None) -> JobObservation:
    """The run's state, from its Job and (once a pod failed) :func:`find_oom_kill`'s finding.

    An OOM kill of one of its pods fails the run at once, as a fatal worker error does through
    the podFailurePolicy: the retries would run the same rows into the same limit. (A policy
    rule cannot do it: it sees exit code 137, which any SIGKILL gives, and that stays retriable.)
    A Job that completed anyway (a later pod succeeded while the operator was down) wins.
    """
    job = _observe_job(job_status or {})
    if oom is None or job.state == JobState.SUCCEEDED:
        return job
    return JobObservation(
        JobState.FAILED,
        REASON_OOM_KILLED,
        oom.message(),
        oom=oom,
        job_unfinished=job.state != JobState.FAILED,
    )


def should_stop_job(status: CsvIngestionStatus, run: int, obs: JobObservation) -> bool:
    """Whether the operator deletes this run's Job: the run has failed, the Job would retry.

    Decided on the status as written (not on the patch), so an operator that crashed between
    the status write and the deletion deletes the Job when it sees the Job again.
    """
    return obs.job_unfinished and status.run == run and status.phase == Phase.FAILED


def _observe_job(job_status: Mapping[str, Any]) -> JobObservation:
    """Classifies a Job by its terminal conditions, else by its active pods."""
    for cond in job_status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobObservation(JobState.SUCCEEDED, cond.get("reason") or "", "")
        if cond.get("type") == "Failed":
            return JobObservation(
                JobState.FAILED, cond.get("reason") or "Failed", cond.get("message") or ""
            )
    if (job_status.get("active") or 0) > 0:
        return JobObservation(JobState.RUNNING)
    return JobObservation(JobState.PENDING)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Sets one condition, keeping lastTransitionTime when its status does not change."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type == type_:
            found = True
            changed = cond.status != status
            cond = Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if changed else cond.last_transition_time or now,
                observed_generation=generation,
            )
        out.append(cond)
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def _conditions(
    status: CsvIngestionStatus,
    generation: int | None,
    now: str,
    *,
    ready: tuple[ConditionStatus, str, str],
    progressing: tuple[ConditionStatus, str, str],
    failed: tuple[ConditionStatus, str, str],
) -> list[Condition]:
    conds: list[Condition] = list(status.conditions)
    for type_, (st, reason, message) in (
        (READY, ready),
        (PROGRESSING, progressing),
        (FAILED, failed),
    ):
        conds = set_condition(conds, type_, st, reason, message, generation, now)
    return conds


def is_suspended(status: CsvIngestionStatus) -> bool:
    return any(c.type == PROGRESSING and c.reason == REASON_SUSPENDED for c in status.conditions)


class Action(enum.Enum):
    NOTHING = "nothing"
    START_RUN = "start-run"  # patch status for a new run, then create its Job
    ENSURE_JOB = "ensure-job"  # the current run's Job must exist (operator restarts)
    SUSPEND = "suspend"  # delete the current Job, keep the checkpoint
    REPORT_PENDING_EDIT = "report-pending-edit"  # spec edited while a run is going
    IGNORE_EDIT = "ignore-edit"  # spec edited after completion
    REFUSE = "refuse"  # the guard refuses the worker: Failed, and no child is created


@dataclass(frozen=True)
class Decision:
    action: Action
    run: int = 0
    reset_checkpoint: bool = False
    stop_job: bool = False
    """With REFUSE: the current run's Job exists and must go (the guard got stricter mid-run)."""


def decide(
    generation: int, spec: CsvIngestionSpec, status: CsvIngestionStatus, refused: bool = False
) -> Decision:
    """What the reconciler does for a CsvIngestion with this spec and status.

    ``refused``: the operator's guard refuses this spec's worker. It is asked wherever a child
    would be created (a new run, or the current run's missing Job), never for a Completed or
    suspended ingestion, which runs nothing.
    """
    decision = _decide(generation, spec, status)
    if refused and decision.action in (Action.START_RUN, Action.ENSURE_JOB):
        return Decision(
            Action.REFUSE, run=status.run, stop_job=decision.action == Action.ENSURE_JOB
        )
    return decision


def restart_requested(spec: CsvIngestionSpec, status: CsvIngestionStatus) -> bool:
    """Whether ``spec.restart`` was raised above the value the current run started with.

    A counter, not a flag: GitOps never has to set it back, and each raise acts once. Lowering
    it (a revert) restarts nothing.
    """
    return spec.restart > status.observed_restart


def _decide(generation: int, spec: CsvIngestionSpec, status: CsvIngestionStatus) -> Decision:
    edited = status.observed_generation is not None and generation != status.observed_generation
    restart = restart_requested(spec, status)
    if status.phase == Phase.COMPLETED:
        if restart and not spec.suspend:
            return Decision(Action.START_RUN, run=status.run + 1, reset_checkpoint=True)
        return Decision(Action.IGNORE_EDIT if edited else Action.NOTHING)
    if spec.suspend:
        # A failed run has no worker to stop; un-suspending it is an edit, which retries.
        if status.phase == Phase.FAILED or is_suspended(status):
            return Decision(Action.NOTHING)
        return Decision(Action.SUSPEND, run=status.run)
    if status.run == 0:
        return Decision(Action.START_RUN, run=1, reset_checkpoint=_source_changed(spec, status))
    if not edited:
        if status.phase in (Phase.PENDING, Phase.IN_PROGRESS, None) and not is_suspended(status):
            return Decision(Action.ENSURE_JOB, run=status.run)
        return Decision(Action.NOTHING)
    if status.phase == Phase.FAILED or is_suspended(status):
        return Decision(
            Action.START_RUN,
            run=status.run + 1,
            reset_checkpoint=restart or _source_changed(spec, status),
        )
    return Decision(Action.REPORT_PENDING_EDIT, run=status.run)


def _source_changed(spec: CsvIngestionSpec, status: CsvIngestionStatus) -> bool:
    """Whether the checkpoint belongs to another file, or to a run of another shape (one file
    and one pod, or work units: worker.pods moved across 1), whose checkpoints the new run
    cannot use: then a new run starts from zero."""
    if status.source_url is not None and status.source_url != spec.source.url:
        return True
    had_units = status.units is not None
    had_progress = had_units or status.checkpoint is not None
    return had_progress and had_units != spec.has_units


def start_run_patch(
    status: CsvIngestionStatus,
    spec: CsvIngestionSpec,
    *,
    run: int,
    job_name: str,
    generation: int,
    reset_checkpoint: bool,
    now: str,
) -> dict[str, Any]:
    """Status of a new run, written before its Job is created so the worker reads it."""
    if run == 1:
        message = f"Run 1: starting worker Job {job_name}"
    elif restart_requested(spec, status):
        message = (
            f"Run {run}: restart requested (spec.restart {spec.restart}); starting from the "
            f"beginning (worker Job {job_name})"
        )
    elif reset_checkpoint and status.source_url not in (None, spec.source.url):
        message = f"Run {run}: source changed to {spec.source.url}; starting from the beginning"
    elif reset_checkpoint:
        message = (f"Run {run}: the run's shape changed (worker.pods {spec.worker.pods}): its "
                   "checkpoints do not carry over; starting from the beginning")
    elif status.units is not None:
        left = status.units.total - status.units.counts.completed
        message = (
            f"Run {run}: running the units not completed ({left} of {status.units.total}), "
            f"each from its checkpoint (worker Job {job_name})"
        )
    else:
        row = status.checkpoint.row if status.checkpoint else 0
        message = f"Run {run}: resuming from row {row} (worker Job {job_name})"
    reset: dict[str, Any] = {}
    if status.units is not None and not reset_checkpoint:
        # A retry: the failed units run again, each from its checkpoint; completed ones stay.
        reset = {"units": retry_failed(status.units)}
    if reset_checkpoint:
        reset = dict(
            units=None,
            checkpoint=None,
            rows_read=0,
            rows_published=0,
            rows_failed=0,
            bytes_read=0,
            bytes_total=None,
            progress=None,
            source_version=None,
        )
    return status_patch(
        phase=Phase.PENDING,
        run=run,
        job_name=job_name,
        observed_generation=generation,
        observed_restart=spec.restart,
        source_url=spec.source.url,
        message=message,
        last_error=None,
        completion_time=None,
        conditions=_conditions(
            status,
            generation,
            now,
            ready=(ConditionStatus.FALSE, "Running", "The ingestion has not finished"),
            progressing=(ConditionStatus.TRUE, "RunStarted", message),
            failed=(ConditionStatus.FALSE, "RunStarted", ""),
        ),
        **NO_RATE,
        **reset,
    )


def suspend_patch(status: CsvIngestionStatus, generation: int, now: str) -> dict[str, Any]:
    row = status.checkpoint.row if status.checkpoint else 0
    message = f"Suspended at row {row}; set spec.suspend to false to resume"
    return status_patch(
        phase=Phase.PENDING,
        observed_generation=generation,
        message=message,
        **NO_RATE,
        conditions=_conditions(
            status,
            generation,
            now,
            ready=(ConditionStatus.FALSE, REASON_SUSPENDED, message),
            progressing=(ConditionStatus.FALSE, REASON_SUSPENDED, message),
            failed=(ConditionStatus.FALSE, REASON_SUSPENDED, ""),
        ),
    )


def refused_patch(
    status: CsvIngestionStatus, generation: int, refusal: str, now: str
) -> dict[str, Any] | None:
    """Failed, with the guard's reasons, for a spec whose worker the operator will not run
    (None if already written for this generation). ``run`` and the checkpoint stay: an edit
    that the guard accepts starts the next run as after any failure."""
    message = f"Refused, no worker started: {refusal}; an edit of the spec retries"
    if (
        status.phase == Phase.FAILED
        and status.message == message
        and status.observed_generation == generation
    ):
        return None
    return status_patch(
        phase=Phase.FAILED,
        observed_generation=generation,
        message=message,
        conditions=_conditions(
            status,
            generation,
            now,
            ready=(ConditionStatus.FALSE, REASON_REFUSED, message),
            progressing=(ConditionStatus.FALSE, REASON_REFUSED, message),
            failed=(ConditionStatus.TRUE, REASON_REFUSED, message),
        ),
    )


def pending_edit_message(status: CsvIngestionStatus, generation: int) -> str:
    return (
        f"spec generation {generation} was edited while run {status.run} (generation "
        f"{status.observed_generation}) is going; it applies to the next run"
    )


def pending_edit_patch(
    status: CsvIngestionStatus, generation: int, now: str
) -> dict[str, Any] | None:
    """Reports a spec edit made while a run is going, in the message and Progressing condition
    (None if already reported)."""
    message = pending_edit_message(status, generation)
    if status.message == message:
        return None
    return status_patch(
        message=message,
        conditions=set_condition(
            status.conditions,
            PROGRESSING,
            ConditionStatus.TRUE,
            "SpecChangePending",
            message,
            status.observed_generation,
            now,
        ),
    )


UNITS_NAMED = 3
"""Failed units named in the message (all of them are in status.units.failed)."""


def units_failure(units: UnitsStatus) -> str | None:
    """Why a run whose Job succeeded failed all the same: some units failed (each index went
    on with its other units), or did not run. None when every unit completed."""
    c = units.counts
    if c.failed:
        named = "; ".join(f"{u.source_url or f'unit {u.id}'}: {u.reason}"
                          for u in units.failed[:UNITS_NAMED])
        more = f" (and {c.failed - UNITS_NAMED} more, in status.units.failed)" \
            if c.failed > UNITS_NAMED else ""
        return (f"{c.failed} of {units.total} {units.kind.value.lower()} failed: {named}{more}; "
                "fix them and edit the spec to run only those again")
    if not is_finished(units):
        return (f"the worker Job completed with {c.pending + c.running} of {units.total} units "
                "not done; edit the spec to run them")
    return None


def job_patch(
    status: CsvIngestionStatus,
    run: int,
    job_name: str,
    obs: JobObservation,
    now: str,
) -> dict[str, Any] | None:
    """The status change a Job's state causes, or None (stale Job, no change)."""
    if run != status.run or status.phase in (Phase.COMPLETED, Phase.FAILED, None):
        return None
    if is_suspended(status):
        return None  # the Job is being deleted: its last events are not news
    gen = status.observed_generation
    if obs.state == JobState.RUNNING:
        if status.phase != Phase.PENDING:
            return None
        message = f"Run {run}: worker Job {job_name} is running"
        return status_patch(
            phase=Phase.IN_PROGRESS,
            start_time=status.start_time or now,
            message=message,
            conditions=_conditions(
                status,
                gen,
                now,
                ready=(ConditionStatus.FALSE, "Running", "The ingestion has not finished"),
                progressing=(ConditionStatus.TRUE, "Running", message),
                failed=(ConditionStatus.FALSE, "Running", ""),
            ),
        )
    if obs.state == JobState.SUCCEEDED and status.units is not None:
        failure = units_failure(status.units)
        if failure is not None:
            obs = JobObservation(JobState.FAILED, "UnitsFailed", failure)
    if obs.state == JobState.SUCCEEDED:
        message = f"Completed: {status.rows_published} rows published, {status.rows_failed} failed"
        if status.units is not None:
            message += f" ({status.units.progress})"
        return status_patch(
            phase=Phase.COMPLETED,
            start_time=status.start_time or now,
            completion_time=now,
            progress="100%" if status.bytes_total else status.progress,
            message=message,
            **NO_RATE,
            conditions=_conditions(
                status,
                gen,
                now,
                ready=(ConditionStatus.TRUE, "Completed", message),
                progressing=(ConditionStatus.FALSE, "Completed", message),
                failed=(ConditionStatus.FALSE, "Completed", ""),
            ),
        )
    if obs.state == JobState.FAILED:
        if obs.oom is not None:
            # It beats a lastError: an OOM-killed pod writes none, so that was an earlier pod's.
            message = obs.message
        elif obs.reason == "UnitsFailed":
            message = obs.message
        else:
            detail = obs.reason + (f": {obs.message}" if obs.message else "")
            message = status.last_error or f"worker Job {job_name} failed ({detail})"
        message = f"Run {run} failed: {message}"
        history: dict[str, Any] = {}
        if obs.oom is not None:
            # The killed pod wrote no record of its end: the operator writes it.
            record = AttemptRecord(
                attempt=max(1, status.attempts),
                run=run,
                time=now,
                outcome=REASON_OOM_KILLED,
                message=obs.message,
            )
            history = {"history": with_attempt(status.history, record)}
        return status_patch(
            phase=Phase.FAILED,
            message=message,
            **NO_RATE,
            **history,
            conditions=_conditions(
                status,
                gen,
                now,
                ready=(ConditionStatus.FALSE, "Failed", message),
                progressing=(ConditionStatus.FALSE, "Failed", message),
                failed=(ConditionStatus.TRUE, obs.reason or "Failed", message),
            ),
        )
    return None
