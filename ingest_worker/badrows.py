"""The pod's log of bad rows: the first few each on a line, then counts (pure; unit-tested).

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
and the run's totals at its end. After the first lines, a bad row costs one dict increment here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_LINES = 100
"""Bad rows logged one by one per pod: enough to see what is wrong with a file."""
SUMMARY_EVERY_S = 10.0
"""At most one summary line this often: 120 lines (~40 KB) for a run of 20 minutes."""
MAX_KINDS = 32
"""Kinds of reason counted apart (one per column and failure, in practice); the rest: other."""
OTHER = "other"
LINES_ENV = "CSVKAFKA_BAD_ROWS_LOGGED"


class BadRowLike(Protocol):
    """What the log reads of a bad row (:class:`ingest_worker.csv.encode.BadRow`)."""

    @property
    def line(self) -> int: ...
    @property
    def row(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def reason(self) -> str: ...


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


def reason_kind(reason: str) -> str:
    """The reason without what is particular to its row (the value, a byte position), so rows
    that fail the same way count together: ``column 'amount': not an int: 'x'`` is
    ``column 'amount': not an int``; ``invalid utf-8 at byte 7 of the row`` is ``invalid
    utf-8``; ``refused by Kafka: ...`` is ``refused by Kafka``."""
    if reason.startswith("column "):  # "column NAME: WHY: VALUE", the value last
        return reason.rpartition(": ")[0]
    if reason.startswith("invalid "):
        return reason.partition(" at byte ")[0]
    return reason.partition(": ")[0]


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

    def add(self, bad: Sequence[BadRowLike]) -> None:
        if not bad:
            return
        self.rows += len(bad)
        self.last_line = bad[-1].line
        first = min(self.budget.left, len(bad))
        if first > 0:
            self.budget.left -= first
            self.logged += first
            for b in bad[:first]:
                self.log.warning(f"Failed to parse row {b.line}: {b.reason}", extra={
                    "line": b.line, "row": b.row, "offset": b.offset, "reason": b.reason})
                _count(self.total, reason_kind(b.reason))
        since = self.since
        for b in bad[first:]:  # counted, never formatted
            kind = reason_kind(b.reason)
            if kind in since:
                since[kind] += 1
            else:
                _count(since, kind)
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
