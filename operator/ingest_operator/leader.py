"""Leader election over a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it:
two replicas run, and only the Lease's holder runs kopf's handlers.

The decisions are pure functions of what was read and of the clocks, given as arguments
(:func:`observe`, :func:`decide`, :func:`spec_for`); :class:`LeaderElector` is the I/O around
them, a thread that reads and writes the Lease every retry period.

- A standby takes the Lease when it is free (no holder: released) or expired: unchanged for
  ``leaseDurationSeconds`` since *this* replica first saw its current version. As in client-go,
  expiry is timed on the standby's own monotonic clock, never by comparing the holder's
  ``renewTime`` with the standby's wall clock, so clock skew between nodes cannot make two
  leaders. Every write carries the ``resourceVersion`` it was decided on (a create, a 409 if
  someone else created it first): of two candidates, one wins and the other re-reads.
- The leader renews every retry period. If it has not renewed for the renew deadline (less
  than the lease duration), it stops kopf and exits non-zero at once: it is gone before any
  standby can take over, and the kubelet restarts it as a standby. If it reads another tenure
  in the Lease, it exits the same way.
- On SIGTERM the leader stops kopf first, then releases the Lease (no holder, a duration of
  1 s), so the standby takes over within a retry period instead of a lease duration.

The holder's identity is its pod's name: the API server's audit log names the same pod
(``user.extra["authentication.kubernetes.io/pod-name"]``), which is how the fault test checks
that only the holder writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from ingest_operator import metrics
from ingest_operator.config import OperatorConfig, OperatorConfigError

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 3
"""The operator's exit status when it lost the Lease (0 is a clean stop, 2 a bad setting)."""


# --- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What a Lease says, as the election reads it."""

    holder: str
    """``spec.holderIdentity``; empty when released or never held."""
    duration: int
    transitions: int
    """``spec.leaseTransitions``: a new number for every tenure, which names it."""
    acquire_time: str | None
    renew_time: str | None
    version: str
    """``metadata.resourceVersion``: changes with every write."""


def record_of(lease: Mapping[str, Any] | None) -> Record | None:
    """The Lease as the API gives it (camelCase), None when there is none."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return Record(
        holder=spec.get("holderIdentity") or "",
        duration=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        version=str(lease["metadata"].get("resourceVersion") or ""),
    )


@dataclass(frozen=True)
class Observation:
    """A version of the Lease and when this replica first saw it (monotonic seconds)."""

    record: Record
    since: float


def observe(previous: Observation | None, record: Record | None, now: float) -> Observation | None:
    """The observation after a read: the same version keeps the time it was first seen."""
    if record is None:
        return None
    if previous is not None and previous.record.version == record.version:
        return previous
    return Observation(record, now)


class Action(StrEnum):
    CREATE = "create"  # no Lease yet: create it, held by me
    TAKE = "take"  # free or expired: replace it, guarded by its resourceVersion
    RENEW = "renew"  # my tenure: replace it with a new renewTime
    WAIT = "wait"  # another replica holds it and it has not expired
    LOST = "lost"  # I led, and the Lease no longer holds my tenure


def decide(observed: Observation | None, me: str, now: float, tenure: int | None) -> Action:
    """What to do with the Lease as last read.

    ``tenure`` is the ``leaseTransitions`` of the tenure this process holds, None while it
    stands by. A Lease that names this pod but not this process's tenure (the container was
    restarted) is treated as anyone else's: waited out, as client-go does with its
    per-process identities, so a crash hands over to the standby."""
    if tenure is not None:
        mine = observed is not None and (observed.record.holder, observed.record.transitions)
        return Action.RENEW if mine == (me, tenure) else Action.LOST
    if observed is None:
        return Action.CREATE
    if not observed.record.holder or now >= observed.since + observed.record.duration:
        return Action.TAKE
    return Action.WAIT


def micro_time(wall: datetime) -> str:
    """A ``MicroTime`` as the API server parses it: always six digits of microseconds
    (``datetime.isoformat`` drops them when they are zero, which the API server refuses)."""
    return wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def spec_for(action: Action, record: Record | None, me: str, wall: datetime, duration: int
             ) -> dict[str, Any]:
    """The Lease's spec after ``action`` (CREATE, TAKE or RENEW) at wall-clock ``wall``."""
    stamp = micro_time(wall)
    if action is Action.RENEW:
        assert record is not None
        return {"holderIdentity": me, "leaseDurationSeconds": duration,
                "acquireTime": record.acquire_time, "renewTime": stamp,
                "leaseTransitions": record.transitions}
    if action in (Action.CREATE, Action.TAKE):
        transitions = 0 if record is None else record.transitions + 1
        return {"holderIdentity": me, "leaseDurationSeconds": duration, "acquireTime": stamp,
                "renewTime": stamp, "leaseTransitions": transitions}
    raise ValueError(f"no write for {action}")


def released_spec(record: Record, wall: datetime) -> dict[str, Any]:
    """The Lease given up (client-go's ReleaseOnCancel): no holder, and a 1 s duration for a
    candidate that only looks at the duration."""
    stamp = micro_time(wall)
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": stamp,
            "renewTime": stamp, "leaseTransitions": record.transitions}


def stop_grace(lease_duration: float, renew_deadline: float) -> float:
    """How long a leader that lost the Lease lets kopf stop before it exits regardless: well
    inside the margin between its renew deadline and the earliest takeover."""
    return min(1.0, (lease_duration - renew_deadline) / 4)


# --- identity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    name: str
    """The holder identity: the pod's name."""
    namespace: str
    """Where the Lease is: the operator's own namespace."""


def identity_from_env(environ: Mapping[str, str]) -> Identity:
    """POD_NAME and POD_NAMESPACE, from the downward API (manifests/deployment.yaml)."""
    missing = [v for v in ("POD_NAME", "POD_NAMESPACE") if not environ.get(v)]
    if missing:
        raise OperatorConfigError(
            f"leader election needs {' and '.join(missing)} (the downward API, "
            "manifests/deployment.yaml); CSVKAFKA_LEADER_ELECTION=false runs without"
        )
    return Identity(environ["POD_NAME"], environ["POD_NAMESPACE"])


# --- I/O ---------------------------------------------------------------------------------------


class LeaseApi(Protocol):
    """The three calls the election makes; each returns the Lease as the API writes it."""

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The Lease, None if there is none."""

    def create(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """None if it already exists (409)."""

    def replace(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """None if its resourceVersion is no longer the current one (409)."""


class KubeLeaseApi:
    """The Lease through the kubernetes client, with a client of its own: a renewal never
    queues behind the handlers' requests for a connection."""

    def __init__(self, namespace: str, name: str) -> None:
        from kubernetes import client

        from ingest_worker.api.client import api_client

        api_client()  # loads the credentials once (in-cluster, else $KUBECONFIG)
        self._api = client.CoordinationV1Api(client.ApiClient())
        self.namespace, self.name = namespace, name

    def _json(self, response: Any) -> dict[str, Any]:
        # Read raw: the client's model would parse MicroTime into datetime and write it back
        # in a form the API server may refuse (see micro_time).
        body: dict[str, Any] = json.loads(response.data)
        return body

    def _call(self, fn: Callable[..., Any], *args: Any, timeout: float, missing: int
              ) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._json(fn(*args, _preload_content=False, _request_timeout=timeout))
        except ApiException as exc:
            if exc.status == missing:
                return None
            raise

    def get(self, timeout: float) -> dict[str, Any] | None:
        return self._call(self._api.read_namespaced_lease, self.name, self.namespace,
                          timeout=timeout, missing=404)

    def create(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        return self._call(self._api.create_namespaced_lease, self.namespace, body,
                          timeout=timeout, missing=409)

    def replace(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        return self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body,
                          timeout=timeout, missing=409)


class LeaderElector:
    """Campaigns for the Lease, then keeps it; exits the process when it is lost.

    ``stop_flag`` is kopf's: set on SIGTERM and on losing the Lease. ``exit`` ends the process
    without waiting for anything (tests pass their own)."""

    def __init__(self, config: OperatorConfig, identity: Identity, stop_flag: threading.Event,
                 api: LeaseApi | None = None, exit: Callable[[int], None] = os._exit) -> None:
        self.identity = identity
        self.duration = config.lease_duration_seconds
        self.renew_deadline = config.renew_deadline_seconds
        self.retry = config.retry_period_seconds
        self.stop_flag = stop_flag
        self.lease_name = config.lease_name
        self.api = api if api is not None else KubeLeaseApi(identity.namespace, self.lease_name)
        self._exit = exit
        self.leading = threading.Event()
        self._done = threading.Event()  # the loop must stop (release, or a clean stop)
        self._lock = threading.Lock()
        self._observed: Observation | None = None
        self._tenure: int | None = None
        self._renewed = 0.0  # monotonic start of the last successful renewal
        self._tick = time.monotonic()
        self._lost = False
        self._last_error = ""
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="lease-watchdog",
                                          daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost

    def healthy(self) -> bool:
        """The election loop is going round (it makes an attempt every retry period; each
        request times out within one): what a standby's liveness probe asks."""
        return time.monotonic() - self._tick < max(30.0, 5 * self.retry)

    def campaign(self) -> bool:
        """Starts the election and waits until this replica leads (True) or ``stop_flag`` is
        set first (False)."""
        self._thread.start()
        self._watchdog.start()
        log.info("standing by for Lease %s/%s as %s", self.identity.namespace,
                 self.lease_name, self.identity.name)
        while not self.leading.wait(0.2):
            if self.stop_flag.is_set():
                return False
        return not self.stop_flag.is_set()

    # The loop: one read, one decision, at most one write, every retry period.
    def _loop(self) -> None:
        try:
            while not self._done.is_set() and not self._lost:
                start = time.monotonic()
                self._tick = start
                self._attempt(start)
                self._sleep(start)
        except BaseException:  # never lead without a loop that renews
            log.exception("the leader election loop failed")
            self._lose("the election loop failed")

    def _sleep(self, start: float) -> None:
        period = self.retry if self._tenure is not None else self.retry * random.uniform(1, 1.2)
        wake = start + period
        if self._tenure is not None:
            wake = min(wake, self._renewed + self.renew_deadline)  # never sleep past it
        self._done.wait(max(0.0, wake - time.monotonic()))

    def _timeout(self) -> float:
        """A request's timeout: a leader's never runs past its renew deadline."""
        if self._tenure is None:
            return max(self.retry, 1.0)
        return max(0.05, self._renewed + self.renew_deadline - time.monotonic())

    def _attempt(self, start: float) -> None:
        try:
            record = record_of(self.api.get(self._timeout()))
            with self._lock:
                self._observed = observe(self._observed, record, time.monotonic())
                action = decide(self._observed, self.identity.name, time.monotonic(),
                                self._tenure)
            if action is Action.WAIT:
                return
            if action is Action.LOST:
                self._lose(f"the Lease holds another tenure ({record})")
                return
            written = self._write(action, record)
        except Exception as exc:  # any failure is a failed attempt: the renew deadline judges
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:
                log.warning("Lease attempt failed: %s", message)
            self._last_error = message
            return
        self._last_error = ""
        if written is None:
            return  # someone else wrote first (409): the next read tells who
        new = record_of(written)
        assert new is not None
        with self._lock:
            self._observed = Observation(new, time.monotonic())
            if self._tenure is None:
                self._tenure, self._renewed = new.transitions, start
            else:
                self._renewed = start  # the renewal was sent after start: a safe bound
        if not self.leading.is_set():
            log.info("acquired Lease %s (tenure %d)", self.identity.name, new.transitions)
            metrics.lead()
            self.leading.set()

    def _write(self, action: Action, record: Record | None) -> dict[str, Any] | None:
        spec = spec_for(action, record, self.identity.name, datetime.now(UTC), self.duration)
        body = self._body(record, spec)
        if action is Action.CREATE:
            return self.api.create(body, self._timeout())
        return self.api.replace(body, self._timeout())

    def _body(self, record: Record | None, spec: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.lease_name,
                                    "namespace": self.identity.namespace}
        if record is not None:
            metadata["resourceVersion"] = record.version  # the optimistic lock
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": spec}

    # The watchdog: the renew deadline is judged apart from the loop, so a loop stuck in a
    # request still loses the Lease on time.
    def _watch(self) -> None:
        while not self._done.wait(0.1):
            with self._lock:
                tenure, renewed = self._tenure, self._renewed
            if tenure is not None and time.monotonic() - renewed > self.renew_deadline:
                self._lose(f"not renewed for {self.renew_deadline:g} s")
                return

    def _lose(self, reason: str) -> None:
        """Stops the handlers and exits non-zero: never write without the Lease."""
        with self._lock:
            if self._lost or self._done.is_set():
                return
            self._lost = True
        log.error("lost Lease %s: %s; stopping the handlers and exiting",
                  self.identity.name, reason)
        metrics.LEADER.set(0)
        self.stop_flag.set()
        # kopf may be in the middle of a handler (sync, in a thread it cannot cancel): wait
        # no longer than the grace, which ends before any standby may take over.
        time.sleep(stop_grace(self.duration, self.renew_deadline))
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(EXIT_LEASE_LOST)

    def finish(self, release: bool = True) -> int:
        """After kopf stopped: stops renewing, releases the Lease on a clean stop (``release``:
        no handler runs any more), and gives the exit status."""
        if self._lost:
            return EXIT_LEASE_LOST
        with self._lock:
            self._done.set()  # no renewal after this point, and no loss either
        self._thread.join(timeout=self.retry + 1)
        with self._lock:
            tenure, observed = self._tenure, self._observed
        if tenure is None or observed is None or not release:
            return 0
        body = self._body(observed.record, released_spec(observed.record, datetime.now(UTC)))
        try:
            if self.api.replace(body, max(self.retry, 1.0)) is not None:
                log.info("released Lease %s", self.identity.name)
        except Exception as exc:  # the standby takes over when it expires instead
            log.warning("could not release the Lease: %s: %s", type(exc).__name__, exc)
        metrics.LEADER.set(0)
        return 0


@contextlib.contextmanager
def standby_health(port: int, healthy: Callable[[], bool]) -> Iterator[None]:
    """/healthz on the health port while the replica stands by; kopf's own liveness endpoint
    takes the port over once it leads (the probes see one short gap, within their thresholds)."""
    if not port:
        yield
        return

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz" and healthy()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}" if ok else b'{"error": "election loop stuck"}')

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a probe every few seconds is not news

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            # A probe that timed out closed its end first (a busy node): not worth a traceback.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("0.0.0.0", port), Health)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
