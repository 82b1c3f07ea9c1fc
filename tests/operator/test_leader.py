"""Pure unit tests of the leader election (operator/ingest_operator/leader.py): the decisions
on a Lease, its specs and its settings; then the election loop against an in-memory Lease that
keeps the API server's one rule the election relies on (a write names the resourceVersion it
read, else 409). No cluster: the real API server's part is tests/faults/test_failover.py."""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from ingest_operator.config import OperatorConfigError, load_config
from ingest_operator.leader import (
    EXIT_LEASE_LOST,
    Action,
    Identity,
    LeaderElector,
    Observation,
    Record,
    decide,
    identity_from_env,
    micro_time,
    observe,
    record_of,
    released_spec,
    spec_for,
    stop_grace,
)

WALL = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def lease(holder: str = "a", duration: int = 15, transitions: int = 0, version: str = "1",
          **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "l", "namespace": "ns", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "leaseTransitions": transitions, "acquireTime": "2026-03-01T11:00:00.000000Z",
                     "renewTime": "2026-03-01T11:59:59.000000Z", **spec}}


def seen(holder: str = "a", since: float = 100.0, **kw: Any) -> Observation:
    record = record_of(lease(holder, **kw))
    assert record is not None
    return Observation(record, since)


# --- decisions --------------------------------------------------------------------------------


def test_record_of_reads_the_spec_and_tolerates_what_is_absent() -> None:
    assert record_of(None) is None
    r = record_of(lease("pod-1", 15, 3, "42"))
    assert r == Record("pod-1", 15, 3, "2026-03-01T11:00:00.000000Z",
                       "2026-03-01T11:59:59.000000Z", "42")
    bare = record_of({"metadata": {"resourceVersion": "7"}, "spec": {}})
    assert bare == Record("", 0, 0, None, None, "7")


def test_no_lease_is_created() -> None:
    assert decide(None, "me", 0.0, None) is Action.CREATE


def test_a_live_lease_of_another_is_waited_for() -> None:
    assert decide(seen("other", since=100.0), "me", 114.9, None) is Action.WAIT


def test_an_expired_lease_is_taken_after_its_duration_on_the_standbys_own_clock() -> None:
    obs = seen("other", since=100.0, duration=15)
    assert decide(obs, "me", 115.0, None) is Action.TAKE
    # The holder's renewTime (an hour ago, by its wall clock) plays no part: only how long this
    # replica has seen the same version.
    assert decide(seen("other", since=100.0), "me", 101.0, None) is Action.WAIT


def test_a_released_lease_is_taken_at_once() -> None:
    assert decide(seen("", since=100.0, duration=1), "me", 100.0, None) is Action.TAKE
    assert decide(seen("", since=100.0, duration=15), "me", 100.0, None) is Action.TAKE


def test_a_lease_in_my_name_from_a_previous_process_is_waited_out() -> None:
    # The container restarted in the same pod: the Lease names the pod, not this process.
    assert decide(seen("me", since=100.0), "me", 101.0, None) is Action.WAIT
    assert decide(seen("me", since=100.0), "me", 115.0, None) is Action.TAKE


def test_the_leader_renews_its_own_tenure_and_nothing_else() -> None:
    assert decide(seen("me", transitions=4), "me", 0.0, 4) is Action.RENEW
    assert decide(seen("other", transitions=5), "me", 0.0, 4) is Action.LOST
    assert decide(seen("me", transitions=5), "me", 0.0, 4) is Action.LOST  # a later tenure
    assert decide(seen("", transitions=4), "me", 0.0, 4) is Action.LOST  # released by someone
    assert decide(None, "me", 0.0, 4) is Action.LOST  # deleted


def test_an_observation_keeps_the_time_a_version_was_first_seen() -> None:
    r1 = record_of(lease(version="1"))
    r2 = record_of(lease(version="2"))
    first = observe(None, r1, 10.0)
    assert first == Observation(r1, 10.0)  # type: ignore[arg-type]
    assert observe(first, r1, 20.0) is first
    assert observe(first, r2, 20.0) == Observation(r2, 20.0)  # type: ignore[arg-type]
    assert observe(first, None, 20.0) is None


def test_specs_of_create_take_renew_and_release() -> None:
    stamp = "2026-03-01T12:00:00.000000Z"
    assert spec_for(Action.CREATE, None, "me", WALL, 15) == {
        "holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": stamp,
        "renewTime": stamp, "leaseTransitions": 0}
    old = record_of(lease("other", transitions=4))
    assert old is not None
    taken = spec_for(Action.TAKE, old, "me", WALL, 15)
    assert taken["leaseTransitions"] == 5 and taken["acquireTime"] == stamp
    mine = record_of(lease("me", transitions=5, acquireTime="2026-03-01T11:58:00.000000Z"))
    assert mine is not None
    renewed = spec_for(Action.RENEW, mine, "me", WALL, 15)
    assert renewed == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                       "acquireTime": "2026-03-01T11:58:00.000000Z", "renewTime": stamp,
                       "leaseTransitions": 5}
    assert released_spec(mine, WALL) == {"holderIdentity": "", "leaseDurationSeconds": 1,
                                         "acquireTime": stamp, "renewTime": stamp,
                                         "leaseTransitions": 5}
    with pytest.raises(ValueError):
        spec_for(Action.WAIT, mine, "me", WALL, 15)


def test_micro_time_always_has_six_digits() -> None:
    assert micro_time(WALL) == "2026-03-01T12:00:00.000000Z"
    assert micro_time(WALL.replace(microsecond=7)) == "2026-03-01T12:00:00.000007Z"


def test_the_stop_grace_ends_before_a_takeover() -> None:
    assert stop_grace(15, 10) == 1.0
    assert 0 < stop_grace(3, 2.5) < 0.5


# --- settings and identity ----------------------------------------------------------------------


def test_lease_settings_default_to_client_gos_and_keep_its_margins() -> None:
    cfg = load_config({})
    assert cfg.leader_election and cfg.lease_name == "csvkafka-operator"
    assert (cfg.lease_duration_seconds, cfg.renew_deadline_seconds,
            cfg.retry_period_seconds) == (15, 10.0, 2.0)
    with pytest.raises(OperatorConfigError) as err:
        load_config({"CSVKAFKA_LEASE_DURATION_SECONDS": "10",
                     "CSVKAFKA_RENEW_DEADLINE_SECONDS": "10"})
    assert "CSVKAFKA_RENEW_DEADLINE_SECONDS" in str(err.value)
    with pytest.raises(OperatorConfigError) as err:
        load_config({"CSVKAFKA_RETRY_PERIOD_SECONDS": "9"})
    assert "CSVKAFKA_RETRY_PERIOD_SECONDS" in str(err.value)
    assert not load_config({"CSVKAFKA_LEADER_ELECTION": "false"}).leader_election


def test_identity_comes_from_the_downward_api() -> None:
    assert identity_from_env({"POD_NAME": "p", "POD_NAMESPACE": "n"}) == Identity("p", "n")
    with pytest.raises(OperatorConfigError, match="POD_NAME and POD_NAMESPACE"):
        identity_from_env({})


# --- the loop, against an in-memory Lease -------------------------------------------------------


class MemoryLease:
    """One Lease with the API server's optimistic concurrency: a create of an existing one and
    a replace of a stale resourceVersion get a 409 (None here). ``broken`` fails every call,
    as an unreachable API server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.body: dict[str, Any] | None = None
        self.version = 0
        self.broken = False
        self.writes: list[tuple[str, str]] = []  # (holder, the resourceVersion it read)

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError("the API server is unreachable")

    def get(self, timeout: float) -> dict[str, Any] | None:
        with self.lock:
            self._check()
            return copy.deepcopy(self.body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.body = copy.deepcopy(body)
        self.body["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.body)

    def create(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        with self.lock:
            self._check()
            if self.body is not None:
                return None
            self.writes.append((body["spec"]["holderIdentity"], ""))
            return self._store(body)

    def replace(self, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        with self.lock:
            self._check()
            assert self.body is not None
            if body["metadata"].get("resourceVersion") != self.body["metadata"]["resourceVersion"]:
                return None
            self.writes.append((body["spec"]["holderIdentity"],
                                body["metadata"]["resourceVersion"]))
            return self._store(body)

    def holder(self) -> str:
        with self.lock:
            return str((self.body or {}).get("spec", {}).get("holderIdentity", ""))


FAST = {"CSVKAFKA_LEASE_DURATION_SECONDS": "2", "CSVKAFKA_RENEW_DEADLINE_SECONDS": "1",
        "CSVKAFKA_RETRY_PERIOD_SECONDS": "0.1"}


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)


def elector(store: MemoryLease, name: str, exits: Exits) -> LeaderElector:
    return LeaderElector(load_config(FAST), Identity(name, "ns"), threading.Event(), api=store,
                         exit=exits)


def campaign(e: LeaderElector) -> threading.Thread:
    t = threading.Thread(target=e.campaign, daemon=True)
    t.start()
    return t


def wait_until(what: str, fn: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_two_candidates_one_leader_then_a_release_hands_over_at_once() -> None:
    store, exits = MemoryLease(), Exits()
    a, b = elector(store, "a", exits), elector(store, "b", exits)
    campaign(a), campaign(b)
    wait_until("a leader", lambda: a.leading.is_set() or b.leading.is_set())
    time.sleep(0.5)  # several retry periods: the other stays a standby
    assert a.leading.is_set() != b.leading.is_set()
    first, second = (a, b) if a.leading.is_set() else (b, a)
    assert store.holder() == first.identity.name
    released = time.monotonic()
    assert first.finish() == 0
    wait_until("the takeover", second.leading.is_set)
    # A release hands over within a retry period or so, not after the 2 s lease duration.
    assert time.monotonic() - released < 1.0
    assert store.holder() == second.identity.name
    assert second.finish() == 0 and store.holder() == ""
    assert exits.codes == []


def test_a_dead_leader_is_replaced_after_the_lease_duration() -> None:
    store, exits = MemoryLease(), Exits()
    a = elector(store, "a", exits)
    campaign(a)
    wait_until("a to lead", a.leading.is_set)
    # "a" dies without a word: its loop stops, the Lease stays as it was last renewed.
    a._done.set()
    dead = time.monotonic()
    b = elector(store, "b", exits)
    campaign(b)
    wait_until("b to take over", b.leading.is_set)
    assert time.monotonic() - dead >= 2.0  # the lease duration, seen from b's own clock
    assert store.holder() == "b"
    b.finish()


def test_a_leader_that_cannot_renew_stops_and_exits_before_anyone_may_take_over() -> None:
    store, exits = MemoryLease(), Exits()
    a = elector(store, "a", exits)
    campaign(a)
    wait_until("a to lead", a.leading.is_set)
    store.broken = True
    broke = time.monotonic()
    wait_until("a to exit", lambda: exits.codes, timeout=5)
    took = time.monotonic() - broke
    assert exits.codes == [EXIT_LEASE_LOST] and a.stop_flag.is_set() and a.lost
    # The renew deadline (1 s) and the stop grace, under the lease duration (2 s).
    assert took < 2.0, took
    assert a.finish() == EXIT_LEASE_LOST


def test_a_leader_that_sees_another_tenure_exits_at_once() -> None:
    store, exits = MemoryLease(), Exits()
    a = elector(store, "a", exits)
    campaign(a)
    wait_until("a to lead", a.leading.is_set)
    with store.lock:  # another replica's tenure, written as if a's renewals had stalled
        assert store.body is not None
        body = copy.deepcopy(store.body)
        body["spec"] |= {"holderIdentity": "b", "leaseTransitions": 99}
        store._store(body)
    wait_until("a to exit", lambda: exits.codes, timeout=5)
    assert exits.codes == [EXIT_LEASE_LOST] and a.stop_flag.is_set()


def test_only_one_of_many_racing_candidates_ever_holds_each_version() -> None:
    store, exits = MemoryLease(), Exits()
    electors = [elector(store, f"p{i}", exits) for i in range(5)]
    for e in electors:
        campaign(e)
    wait_until("a leader", lambda: any(e.leading.is_set() for e in electors))
    time.sleep(0.3)
    assert sum(e.leading.is_set() for e in electors) == 1
    # Every successful write was decided on the version before it: a chain, never a fork.
    read = [v for _, v in store.writes]
    assert len(set(read)) == len(read), store.writes
    for e in electors:
        e.finish()
