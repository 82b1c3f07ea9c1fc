"""Bad rows as the run sees them (a chunk's, counted by kind), and the pod's log of them: the
first few each on a line, then counts (pure; unit-tested).

A chunk's bad rows stay in its batch, in the compiled core (``csvkafka_core.Batch``), which
words them, counts them by kind and produces their dead letters: a row costs no Python object.
The run gets :class:`BadRows`, the count and the first few as :class:`BadRow` (every one when
``--errors-log`` asks for them).

The dead-letter topic keeps every bad row (and ``--errors-log`` writes one line per row on
the command line); the container log is for someone reading ``kubectl logs``, and it sits on
the node's disk. One JSON line per bad row is about 234 bytes on that disk (194 of JSON, 40 of
containerd's prefix) and 13 µs of the thread that moves the checkpoint forward. A file of 10M
rows, 90% bad, would write 2.1 GB, twice the pod's default ephemeral-storage limit (1 GiB).
The kubelet rotates a container's log at 10 MiB and keeps 5 files, so only the last ~220k
lines would be there to read anyway; and it checks only every 10 s, so a log written at 20 MB/s
can grow past its limit and get the pod evicted before a rotation. 13 µs a row is also over
ten times what a good row costs (1-2 µs), so the log alone would hold a mostly-bad file under
half of a clean file's rate.

So the log holds the first :data:`DEFAULT_LINES` bad rows of the pod (``CSVKAFKA_BAD_ROWS_LOGGED``
changes it), each with its line number and reason; after those, at most one summary line every
:data:`SUMMARY_EVERY_S` (the count by kind of reason since the last one, and the last bad line);
and the run's totals at its end. After the first lines, a chunk costs a dict increment per
kind of reason here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_LINES = 100
"""Bad rows logged one by one per pod: enough to see what is wrong with a file."""
SUMMARY_EVERY_S = 10.0
"""At most one summary line this often: 120 lines (~40 KB) for a run of 20 minutes."""
MAX_KINDS = 32
"""Kinds of reason counted apart (one per column and failure, in practice); the rest: other."""
OTHER = "other"
LINES_ENV = "CSVKAFKA_BAD_ROWS_LOGGED"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class BadRow:
    """A row set aside: the CSV or a conversion failed, or Kafka refused its message."""

    line: int
    """Physical line (1-based) where the record starts."""
    row: int
    """Data row number (1-based, header and blank lines excluded)."""
    offset: int
    """Byte offset of the record in the (uncompressed) file."""
    reason: str
    raw: bytes
    """The record's bytes, without its line terminator."""
    kafka_error: int | None
    """Kafka's error code, when Kafka refused the row's message."""
    kind: str
    """The reason without what is particular to its row (the value, a byte position), so rows
    that fail the same way count together: ``column 'amount': not an int: 'x'`` is ``column
    'amount': not an int``; ``invalid utf-8 at byte 7 of the row`` is ``invalid utf-8``."""


def offset_of(b: BadRow) -> int:
    """The sort key of bad rows in file order."""
    return b.offset


@dataclass(slots=True)
class BadRows:
    """A chunk's bad rows: how many, by kind, the line of the last, and some as rows."""

    count: int = 0
    last_line: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    rows: list[BadRow] = field(default_factory=list)
    """In file order: the first of the chunk's (as many as were asked for), and every one Kafka
    refused once the chunk was sent (they come back in a batch of their own)."""

    def __len__(self) -> int:
        return self.count

    def merged(self, other: BadRows) -> BadRows:
        kinds = dict(self.kinds)
        for k, n in other.kinds.items():
            kinds[k] = kinds.get(k, 0) + n
        return BadRows(self.count + other.count, max(self.last_line, other.last_line), kinds,
                       sorted(self.rows + other.rows, key=offset_of))


@dataclass
class LineBudget:
    """Bad rows still to be logged one by one: one budget for the process, so a pod that runs
    many work units logs N lines in all, not N per unit."""

    left: int


_pod_budget: LineBudget | None = None


def pod_budget(environ: Mapping[str, str] | None = None) -> LineBudget:
    """The process's budget, read once from ``CSVKAFKA_BAD_ROWS_LOGGED`` (default 100)."""
    global _pod_budget
    if _pod_budget is None:
        value = (os.environ if environ is None else environ).get(LINES_ENV, "").strip()
        _pod_budget = LineBudget(int(value) if value.isdigit() else DEFAULT_LINES)
    return _pod_budget


def _count(counts: dict[str, int], kind: str, n: int = 1) -> None:
    if kind not in counts and len(counts) >= MAX_KINDS - 1:  # OTHER is the last
        kind = OTHER
    counts[kind] = counts.get(kind, 0) + n


class BadRowLog:
    """One run's bad rows into the log, given in file order (:meth:`add`); :meth:`tick` now and
    then writes a due summary, :meth:`close` the totals."""

    def __init__(
        self,
        logger: logging.Logger,
        budget: LineBudget,
        every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.budget, self.every_s, self.clock = logger, budget, every_s, clock
        self.rows = 0
        """Bad rows of the run so far."""
        self.logged = 0
        """Of which logged one by one."""
        self.last_line = 0
        self.since: dict[str, int] = {}
        """Rows not logged one by one since the last summary, by kind of reason."""
        self.total: dict[str, int] = {}
        """Every bad row of the run, by kind, as of the last summary."""
        self.last_summary = clock()

    def add(self, bad: BadRows) -> None:
        if not bad.count:
            return
        self.rows += bad.count
        self.last_line = bad.last_line
        rest = bad.kinds
        first = min(self.budget.left, len(bad.rows))
        if first > 0:
            self.budget.left -= first
            self.logged += first
            rest = dict(rest)
            for b in bad.rows[:first]:
                self.log.warning(f"Failed to parse row {b.line}: {b.reason}", extra={
                    "line": b.line, "row": b.row, "offset": b.offset, "reason": b.reason})
                _count(self.total, b.kind)
                rest[b.kind] -= 1
        since = self.since
        for kind, n in rest.items():  # counted, never formatted
            if n <= 0:
                continue
            if kind in since:
                since[kind] += n
            else:
                _count(since, kind, n)
        self.tick()

    def tick(self) -> None:
        """Writes the summary if one is due (rows were counted, the interval passed)."""
        if self.since and self.clock() - self.last_summary >= self.every_s:
            self._summary()

    def _summary(self) -> None:
        n = sum(self.since.values())
        self.log.warning(
            f"{n} more bad rows, the last at line {self.last_line} (not logged one by one): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(self.since.items(), key=lambda kv: -kv[1])),
            extra={"bad_rows": n, "last_line": self.last_line, "by_reason": dict(self.since)},
        )
        for k, v in self.since.items():
            _count(self.total, k, v)
        self.since = {}
        self.last_summary = self.clock()

    def close(self) -> None:
        """The run's totals, once, when it had bad rows (and the summary still due, first)."""
        if self.since:
            self._summary()
        if self.rows:
            self.log.warning(
                f"{self.rows} bad rows in this run ({self.logged} logged one by one), the last "
                f"at line {self.last_line}", extra={
                    "bad_rows": self.rows, "logged": self.logged, "last_line": self.last_line,
                    "by_reason": dict(self.total)})
        self.rows = 0  # a second close writes nothing
