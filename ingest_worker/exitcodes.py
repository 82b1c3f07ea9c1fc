"""Every exit code of the worker, in one place: the command line's, the pod's, and what they mean.

Two audiences read them. A person or a script runs ``csv-ingest run`` (or calls
:func:`~ingest_worker.run_ingestion`, whose result carries the same code) and reads how the
run ended. The Job's podFailurePolicy, which the operator builds, reads how a worker pod ended
(``python -m ingest_worker.job_main``): retry the pod, or fail the run at once. Every code here is
distinct, so a code never means one thing to one reader and another thing to the other.
"""

from __future__ import annotations

# --- how a run ended: run_ingestion's IngestResult.exit_code, and csv-ingest's exit status ------

EXIT_OK = 0
"""Every row acknowledged by Kafka or accounted for as a bad row."""
EXIT_FATAL = 1
"""An error that stopped the run: the source missing, changed or forbidden, a record too
long."""
EXIT_CONFIG = 2
"""A bad job: an invalid spec or flags, columns that do not match the file's header."""
EXIT_TOO_MANY_ERRORS = 3
"""More bad rows than spec.errors allows."""
EXIT_INTERRUPTED = 4
"""Stopped on request (SIGTERM: pod deleted, suspend) with the checkpoint saved."""
EXIT_KAFKA = 5
"""Kafka failed the run: unavailable past the retry budget, authorization refused, a fatal
producer error, a missing topic. Not the file's fault: in a run of many files it stops every
unit, where a file's own error fails that file only."""
EXIT_FENCED = 6
"""Exactly-once: a newer attempt of the same unit took its transactional id over (this one was
a zombie, or stalled past the transaction timeout while another started). Nothing this attempt
sent after that is visible to read_committed consumers; it yields."""

# --- how a worker pod ended: python -m ingest_worker.job_main, read by the Job -------------------

WORKER_EXIT_RETRY = 1
"""A crash, or another attempt of the run is ahead: let the Job start another pod. Also what
Python exits with on an uncaught exception."""
WORKER_EXIT_FATAL = 10
"""An error no retry can fix (missing source, bad credentials, too many bad rows, a bad spec):
the Job's podFailurePolicy fails the run at once instead of retrying the pod. The reason is in
status.lastError."""
WORKER_RETRIABLE = frozenset({EXIT_INTERRUPTED, EXIT_FENCED})
"""Run codes a worker pod exits with as they are, for the Job to retry (resuming from the
checkpoint). Every other failed run exits with :data:`WORKER_EXIT_FATAL`."""


def worker_exit_code(completed: bool, run_code: int) -> int:
    """The pod's exit code for a run that ended with ``run_code``."""
    if completed:
        return EXIT_OK
    if run_code in WORKER_RETRIABLE:
        return run_code
    return WORKER_EXIT_FATAL
