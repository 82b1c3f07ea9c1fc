"""Work units: the one checkpoint model of a unit, and the status of many units (issue 12).

An ingestion of many files (every file under a prefix) or of a huge file cut into byte-range
shards has many *units*, each with its own lifecycle (:class:`UnitState`), counters and
checkpoint. A unit is named by its ``id``, its place in the ingestion's plan: the file's index
in the sorted listing, or the shard's number. Ids run from 0 to ``total - 1``, which lets the
status hold the set of completed units as a bitmap.

:class:`UnitCheckpoint` is the one checkpoint model of a unit. The status (:class:`UnitsStatus`
lists those of the units in progress), the offsets topic of exactly-once delivery (one record
per unit, its value this model's wire form) and a restart from the beginning
(:meth:`UnitCheckpoint.at_start`) all use it. A whole-file run is the one-unit case: see
:meth:`UnitCheckpoint.from_whole_file`.

:class:`UnitsStatus` stays small whatever the number of units: totals, counts by state, the
checkpoints of the units in progress (at most :data:`ACTIVE_MAX`), the first
:data:`FAILED_LISTED_MAX` failed units with their reasons, and bitmaps of the completed and
failed ids. :func:`apply` folds a batch of :data:`UnitEvent` into it: many events, one write.

Pure: nothing here reads a file or talks to Kubernetes (the pods write through
:mod:`ingest_worker.checkpoint.units`; the operator retries with :func:`retry_failed`). A
single file with one pod has no ``status.units``.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from ingest_worker.api.spec import ApiModel

ACTIVE_MAX = 64
"""Most units running at once: a pod runs one unit at a time and ``worker.pods`` is at most 32,
so a run never has more. ``units.active`` holds up to this plus :data:`FAILED_LISTED_MAX` (the
listed failed units a retry puts back in progress); every unit in progress is listed, as its
checkpoint is where it resumes: a ceiling, never a truncation."""

FAILED_LISTED_MAX = 50
"""Failed units listed with their reason and checkpoint; more are counted in ``failedMore``
(and are in the ``failedIds`` bitmap). Measured with 80-character S3 URLs: a checkpoint is
~375 bytes, a failed entry ~640 with its 256-byte reason; 50 listed take 32 KB, 64 in progress
24 KB, the bitmaps of 10,000 units at most ~1.7 KB each. A 10,000-file status is 52.6 KB
(50 running, 100 failed) and 59 KB at the most this model lists, under its 64 KiB budget
(tests/api/test_units.py). 100 listed would not fit."""

REASON_MAX_BYTES = 256  # FailedUnit.reason's description says 256 too
"""A failure reason is cut to this many UTF-8 bytes (at a character boundary): the start of
an error names it; the worker's log has the rest."""

_ELLIPSIS = "…"


class UnitKind(StrEnum):
    FILES = "Files"
    SHARDS = "Shards"


class UnitState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class UnitCounters(ApiModel):
    """Running totals of a unit as of its checkpoint (in units.counters: of all units)."""

    # The fields of the whole-file checkpoint's counters (checkpoint.model.Counters), by name.

    rows_read: int = Field(default=0, ge=0)
    """Data rows read (good and bad; header and blank lines excluded)."""
    rows_published: int = Field(default=0, ge=0)
    """Rows acknowledged by Kafka on the target topic."""
    rows_failed: int = Field(default=0, ge=0)
    """Bad rows (parse or conversion errors, or refused by Kafka on their own)."""
    bytes_read: int = Field(default=0, ge=0)
    """Bytes of the unit before the checkpoint (uncompressed)."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Size of the unit in bytes (the file, or the shard's range), when known."""

    def plus(self, other: UnitCounters, sign: int = 1) -> UnitCounters:
        """These counters plus (``sign`` 1) or minus (-1) ``other``'s; bytesTotal is kept."""
        return self.model_copy(
            update={
                "rows_read": self.rows_read + sign * other.rows_read,
                "rows_published": self.rows_published + sign * other.rows_published,
                "rows_failed": self.rows_failed + sign * other.rows_failed,
                "bytes_read": self.bytes_read + sign * other.bytes_read,
            }
        )


class UnitCheckpoint(ApiModel):
    """The checkpoint of one work unit: every row of the unit before byteOffset is acknowledged
    by Kafka or set aside as a bad row. It sits on a record boundary and only moves forward."""

    # The same shape as the whole-file checkpoint (checkpoint.model.Checkpoint.to_dict()) plus
    # `id`: a whole-file run is unit 0 of one, with the same byteOffset, row, line, counters,
    # done and time, and the file's sourceUrl and sourceVersion (see from_whole_file). In
    # today's status that checkpoint is spread over status.checkpoint, the counters at the top
    # of the status, and status.sourceUrl and sourceVersion.

    id: int = Field(ge=0)
    """The unit's place in the plan: the file's index in the sorted listing, or the shard's
    number (0-based)."""
    source_url: str | None = None
    """The unit's file, for a unit of files; absent for a shard (it is the ingestion's
    source.url)."""
    source_version: str | None = None
    """The version of the unit's object the checkpoint belongs to (version id, ETag, mtime); a
    changed object is not resumed from here."""
    byte_offset: int = Field(default=0, ge=0)
    """Offset in the (uncompressed) object of the unit's first row not known to be delivered;
    a shard's starts at its range's first byte."""
    row: int = Field(default=0, ge=0)
    """Number of the unit's data rows before byteOffset (good and bad)."""
    line: int = Field(default=1, ge=1)
    """Physical line number (1-based) of the record at byteOffset, counted from the unit's start
    (for a file, the file's line number)."""
    counters: UnitCounters = Field(default_factory=UnitCounters)
    """The unit's counters as of this checkpoint."""
    done: bool = False
    """True once the whole unit was processed."""
    time: str | None = None
    """When it was made (RFC 3339)."""

    @classmethod
    def at_start(
        cls,
        unit_id: int,
        byte_offset: int = 0,
        source_url: str | None = None,
        source_version: str | None = None,
        bytes_total: int | None = None,
    ) -> UnitCheckpoint:
        """The checkpoint of a unit not begun, or restarted from the beginning: the unit's first
        byte, no rows, zero counters."""
        return cls(
            id=unit_id,
            source_url=source_url,
            source_version=source_version,
            byte_offset=byte_offset,
            counters=UnitCounters(bytes_total=bytes_total),
        )

    @classmethod
    def from_whole_file(cls, wire: Mapping[str, Any]) -> UnitCheckpoint:
        """Unit 0 from a whole-file checkpoint's wire form (``Checkpoint.to_dict()``).

        Nothing is renamed or dropped: the two have the same fields, and the model's
        ``extra="forbid"`` makes this fail if they ever drift apart.
        """
        return cls.model_validate({**wire, "id": 0})


class FailedUnit(UnitCheckpoint):
    """A failed unit: its last checkpoint (where a retry resumes) and why it failed."""

    reason: str = Field(max_length=REASON_MAX_BYTES)
    """Why the unit failed (the first 256 bytes). The error budget applies per unit:
    errors.maxErrors and maxErrorRatio count each unit's own rows, and bad rows beyond it fail
    that unit only."""


class UnitCounts(ApiModel):
    """How many units are in each state; they add up to units.total."""

    pending: int = Field(default=0, ge=0)
    """Units not started."""
    running: int = Field(default=0, ge=0)
    """Units started and not finished (listed in units.active)."""
    completed: int = Field(default=0, ge=0)
    """Units whose every row is acknowledged or set aside as a bad row."""
    failed: int = Field(default=0, ge=0)
    """Units that failed; the others go on."""


# --- sets of unit ids ------------------------------------------------------------------------


def encode_ids(ids: Iterable[int], total: int) -> str:
    """A set of unit ids in ``range(total)`` as a bitmap (bit i of byte i // 8, least
    significant first), zlib-compressed, base64. 10,000 units: 1,250 bytes before compression;
    a contiguous run compresses to a few dozen."""
    bits = bytearray((total + 7) // 8)
    for i in ids:
        if not 0 <= i < total:
            raise ValueError(f"unit id {i} is not in 0..{total - 1}")
        bits[i >> 3] |= 1 << (i & 7)
    return base64.b64encode(zlib.compress(bytes(bits), 9)).decode("ascii")


def _bitmap(text: str, total: int) -> int:
    raw = zlib.decompress(base64.b64decode(text, validate=True))
    if len(raw) != (total + 7) // 8:
        raise ValueError(f"a bitmap of {len(raw)} bytes does not fit {total} units")
    bits = int.from_bytes(raw, "little")
    if bits >> total:
        raise ValueError(f"a bitmap has ids beyond {total - 1}")
    return bits


def decode_ids(text: str, total: int) -> frozenset[int]:
    """The set of ids that :func:`encode_ids` encoded."""
    _bitmap(text, total)  # checked
    raw = zlib.decompress(base64.b64decode(text, validate=True))
    # Byte by byte: shifting one 10,000-bit integer per id would be quadratic.
    return frozenset(i << 3 | b for i, byte in enumerate(raw) if byte
                     for b in range(8) if byte >> b & 1)


def count_ids(text: str, total: int) -> int:
    """How many ids the bitmap holds, without building the set."""
    return _bitmap(text, total).bit_count()


def progress_text(kind: UnitKind, completed: int, total: int, failed: int = 0) -> str:
    """The printer column's text: ``Files 812/5000``, and ``, 3 failed`` when some did."""
    text = f"{kind.value} {completed}/{total}"
    return f"{text}, {failed} failed" if failed else text


def truncate_reason(reason: str, limit: int = REASON_MAX_BYTES) -> str:
    """The reason on one line, cut to ``limit`` UTF-8 bytes with an ellipsis, at a character
    boundary: the status's size is in bytes, and a character may take four."""
    reason = " ".join(reason.split())
    data = reason.encode("utf-8")
    if len(data) <= limit:
        return reason
    room = limit - len(_ELLIPSIS.encode("utf-8"))
    return data[:room].decode("utf-8", errors="ignore") + _ELLIPSIS


# --- the status of all units -----------------------------------------------------------------


class UnitsStatus(ApiModel):
    """The work units of an ingestion of many files or shards: counts, totals, the units in
    progress and the failed ones; completed units only as a bitmap of their ids."""

    kind: UnitKind
    """What a unit is: Files (one per file under the prefix) or Shards (byte ranges of one
    file)."""
    total: int = Field(ge=0)
    """Number of units in the plan."""
    counts: UnitCounts = Field(default_factory=UnitCounts)
    """Units by state: pending, running, completed, failed."""
    counters: UnitCounters = Field(default_factory=UnitCounters)
    """Counters summed over all units, each as of its checkpoint; bytesTotal is the plan's
    total size, when known."""
    progress: str = ""
    """Completed units of the total, for kubectl get: "Files 812/5000" (", 3 failed" when some
    did)."""
    active: list[UnitCheckpoint] = Field(
        default_factory=list, max_length=ACTIVE_MAX + FAILED_LISTED_MAX
    )
    """The checkpoint of every unit in progress, by id; a unit whose worker stopped stays here
    and resumes from it, as does a listed failed unit that a retry runs again."""
    failed: list[FailedUnit] = Field(default_factory=list, max_length=FAILED_LISTED_MAX)
    """The first failed units, in the order they failed, with why and their last checkpoint."""
    failed_more: int = Field(default=0, ge=0)
    """Failed units beyond those listed in failed (their ids are in failedIds)."""
    completed: str
    """Ids of the completed units: a bitmap (bit i of byte i/8, least significant first),
    zlib-compressed, base64."""
    failed_ids: str
    """Ids of all failed units, listed or not, encoded as completed is."""
    plan: str | None = None
    """SHA-256 of the recorded plan these units belong to: every pod checks it runs that plan."""
    retried: str | None = None
    """Ids of the units that failed in an earlier run and run again in this one, encoded as
    completed is. Such a unit of a whole file may find the file at a new version (fixed), and
    then ingests it from the beginning."""

    @classmethod
    def begin(
        cls, kind: UnitKind, total: int, bytes_total: int | None = None, plan: str | None = None
    ) -> UnitsStatus:
        """Every unit pending: the status a plan of ``total`` units starts with."""
        empty = encode_ids((), total)
        return cls(
            kind=kind,
            plan=plan,
            total=total,
            counts=UnitCounts(pending=total),
            counters=UnitCounters(bytes_total=bytes_total),
            progress=progress_text(kind, 0, total),
            completed=empty,
            failed_ids=empty,
        )

    def retried_ids(self) -> frozenset[int]:
        return frozenset() if self.retried is None else decode_ids(self.retried, self.total)

    def completed_ids(self) -> frozenset[int]:
        return decode_ids(self.completed, self.total)

    def all_failed_ids(self) -> frozenset[int]:
        return decode_ids(self.failed_ids, self.total)

    @model_validator(mode="after")
    def _consistent(self) -> UnitsStatus:
        c = self.counts
        if c.pending + c.running + c.completed + c.failed != self.total:
            raise ValueError(f"counts {c.to_wire()} do not add up to total {self.total}")
        if len(self.active) != c.running:
            raise ValueError(f"{len(self.active)} active units, counts.running {c.running}")
        if len(self.failed) + self.failed_more != c.failed:
            raise ValueError(f"{len(self.failed)} failed listed + failedMore {self.failed_more} "
                             f"!= counts.failed {c.failed}")
        if count_ids(self.completed, self.total) != c.completed:
            raise ValueError("the completed bitmap does not hold counts.completed ids")
        if count_ids(self.failed_ids, self.total) != c.failed:
            raise ValueError("the failedIds bitmap does not hold counts.failed ids")
        for unit in (*self.active, *self.failed):
            if unit.id >= self.total:
                raise ValueError(f"unit id {unit.id} is not in 0..{self.total - 1}")
        return self


# --- events, and how a batch of them changes the status --------------------------------------


@dataclass(frozen=True)
class UnitStarted:
    """A unit began, resumed, or restarted from the beginning, at ``checkpoint``."""

    checkpoint: UnitCheckpoint


@dataclass(frozen=True)
class UnitCheckpointed:
    """A unit's checkpoint moved forward."""

    checkpoint: UnitCheckpoint


@dataclass(frozen=True)
class UnitCompleted:
    """A unit finished: every row acknowledged or set aside; ``checkpoint`` is its last."""

    checkpoint: UnitCheckpoint


@dataclass(frozen=True)
class UnitFailed:
    """A unit failed, with its last checkpoint; the other units go on."""

    checkpoint: UnitCheckpoint
    reason: str


UnitEvent = UnitStarted | UnitCheckpointed | UnitCompleted | UnitFailed


def apply(status: UnitsStatus, events: Iterable[UnitEvent]) -> UnitsStatus:
    """The status after ``events``, in their order: a batch of events makes one status write.

    - UnitStarted sets a pending or running unit's checkpoint, wherever it is: a resume, or a
      restart from the beginning (the counters go back with it).
    - UnitCheckpointed moves a unit's checkpoint forward; one behind the current is stale and
      ignored (checkpoints are monotonic). It starts a pending unit.
    - UnitCompleted and UnitFailed end a unit. Completed and Failed are final within a run:
      later events for that unit (a replaced pod's last words) are ignored.

    The summed counters move by each unit's change since its previous checkpoint. An id
    outside the plan is a caller's bug: ValueError.
    """
    total = status.total
    done = set(status.completed_ids())
    failed_ids = set(status.all_failed_ids())
    active = {u.id: u for u in status.active}
    failed = list(status.failed)
    failed_more = status.failed_more
    counters = status.counters
    for event in events:
        cp = event.checkpoint
        if cp.id >= total:
            raise ValueError(f"unit id {cp.id} is not in 0..{total - 1}")
        if cp.id in done or cp.id in failed_ids:
            continue
        previous = active.get(cp.id)
        if (
            isinstance(event, UnitCheckpointed)
            and previous is not None
            and cp.byte_offset < previous.byte_offset
        ):
            continue
        if previous is not None:
            counters = counters.plus(previous.counters, -1)
        counters = counters.plus(cp.counters)
        if isinstance(event, UnitStarted | UnitCheckpointed):
            active[cp.id] = cp
            continue
        active.pop(cp.id, None)
        if isinstance(event, UnitCompleted):
            done.add(cp.id)
        else:
            failed_ids.add(cp.id)
            if len(failed) < FAILED_LISTED_MAX:
                failed.append(
                    FailedUnit(**cp.model_dump(), reason=truncate_reason(event.reason))
                )
            else:
                failed_more += 1
    counts = UnitCounts(
        pending=total - len(active) - len(done) - len(failed_ids),
        running=len(active),
        completed=len(done),
        failed=len(failed_ids),
    )
    # Built, not copied: the model's validator checks the counts against the lists and bitmaps.
    return UnitsStatus(
        kind=status.kind,
        total=total,
        counts=counts,
        counters=counters,
        progress=progress_text(status.kind, len(done), total, len(failed_ids)),
        active=[active[i] for i in sorted(active)],
        failed=failed,
        failed_more=failed_more,
        completed=encode_ids(done, total),
        failed_ids=encode_ids(failed_ids, total),
        plan=status.plan,
        retried=status.retried,
    )


def retry_failed(status: UnitsStatus) -> UnitsStatus:
    """The status a retry (a new run) starts from: the failed units run again, each from its
    last checkpoint when it is listed (it goes back to ``active``), from its start when it was
    only counted (``failedMore``); completed units stay completed."""
    failed = status.all_failed_ids()
    if not failed:
        return status.model_copy(update={"retried": None})
    active = {u.id: u for u in status.active}
    for f in status.failed:
        active[f.id] = UnitCheckpoint.model_validate(f.model_dump(exclude={"reason"}))
    empty = encode_ids((), status.total)
    done = status.counts.completed
    return UnitsStatus(
        kind=status.kind,
        total=status.total,
        counts=UnitCounts(pending=status.total - len(active) - done, running=len(active),
                          completed=done),
        counters=status.counters,
        progress=progress_text(status.kind, done, status.total),
        active=[active[i] for i in sorted(active)],
        completed=status.completed,
        failed_ids=empty,
        plan=status.plan,
        retried=encode_ids(failed, status.total),
    )


def is_finished(status: UnitsStatus) -> bool:
    """Every unit completed or failed."""
    return status.counts.completed + status.counts.failed == status.total


def overall_phase(status: UnitsStatus) -> UnitState:
    """Completed when every unit completed; Failed when every unit finished and one or more
    failed (a failed unit never stops the others); Running otherwise. The operator's phase is
    the same word, with InProgress for Running."""
    if not is_finished(status):
        return UnitState.RUNNING
    return UnitState.FAILED if status.counts.failed else UnitState.COMPLETED
