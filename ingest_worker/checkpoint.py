"""Checkpoints: where a resumed run starts, and the store interface that keeps them.

A checkpoint ``(byte_offset, row, line)`` promises that every row before ``byte_offset`` has been
acknowledged by Kafka (or accounted for as a bad row). It always sits on a record boundary and
only moves forward. The worker computes it as the contiguous low-watermark of finished chunks
(:class:`Watermark`), because chunks are acknowledged out of order.

Two stores implement :class:`CheckpointStore`: :class:`FileCheckpointStore` (command line) and
the operator's store over the CsvIngestion status subresource. Any object with these three
methods works; the worker calls them from one thread only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Counters:
    """Running totals, as of the checkpoint they travel with."""

    rows_read: int = 0
    """Data rows read (good and bad; header and blank lines excluded)."""
    rows_published: int = 0
    """Rows acknowledged by Kafka on the target topic."""
    rows_failed: int = 0
    """Bad rows (parse or conversion errors)."""
    bytes_read: int = 0
    """Bytes of the (uncompressed) file before the checkpoint."""
    bytes_total: int | None = None
    """Size of the (uncompressed) file, when known."""

    def plus(self, rows_read: int, rows_published: int, rows_failed: int, nbytes: int) -> Counters:
        return replace(
            self,
            rows_read=self.rows_read + rows_read,
            rows_published=self.rows_published + rows_published,
            rows_failed=self.rows_failed + rows_failed,
            bytes_read=self.bytes_read + nbytes,
        )


@dataclass(frozen=True)
class Checkpoint:
    """A safe resume point: every row before ``byte_offset`` is acknowledged."""

    byte_offset: int
    """Offset in the uncompressed file of the first row not known to be delivered."""
    row: int
    """Number of data rows before ``byte_offset`` (good and bad)."""
    line: int
    """Physical line number (1-based) of the record at ``byte_offset``."""
    source_url: str
    """The file this checkpoint belongs to."""
    source_version: str | None
    """Version of the file (local: size and mtime; cloud: version id/etag), if known."""
    counters: Counters = field(default_factory=Counters)
    done: bool = False
    """True once the whole file was processed."""
    time: str = field(default_factory=now_rfc3339)
    """When it was made (RFC 3339)."""

    def to_dict(self) -> dict[str, Any]:
        """The camelCase JSON form (as stored in files and in the resource's status)."""
        c = self.counters
        return {
            "byteOffset": self.byte_offset,
            "row": self.row,
            "line": self.line,
            "sourceUrl": self.source_url,
            "sourceVersion": self.source_version,
            "done": self.done,
            "time": self.time,
            "counters": {
                "rowsRead": c.rows_read,
                "rowsPublished": c.rows_published,
                "rowsFailed": c.rows_failed,
                "bytesRead": c.bytes_read,
                "bytesTotal": c.bytes_total,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        c = d.get("counters") or {}
        return cls(
            byte_offset=int(d["byteOffset"]),
            row=int(d["row"]),
            line=int(d.get("line", 1)),
            source_url=str(d.get("sourceUrl", "")),
            source_version=d.get("sourceVersion"),
            done=bool(d.get("done", False)),
            time=str(d.get("time") or now_rfc3339()),
            counters=Counters(
                rows_read=int(c.get("rowsRead", 0)),
                rows_published=int(c.get("rowsPublished", 0)),
                rows_failed=int(c.get("rowsFailed", 0)),
                bytes_read=int(c.get("bytesRead", 0)),
                bytes_total=c.get("bytesTotal"),
            ),
        )


@dataclass(frozen=True)
class Outcome:
    """How a run ended, passed to :meth:`CheckpointStore.final`."""

    completed: bool
    """Every row acknowledged or accounted for as a bad row."""
    message: str
    """The one-line summary, or the fatal error."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Implementations must make ``save`` atomic.

    ``load`` is called once at start; ``save`` whenever the watermark has moved far enough (every
    N rows or T seconds), always with a checkpoint at or past the previous one; ``final`` once at
    the end, with the last checkpoint (``done=True`` when the file is complete) and the outcome.
    """

    def load(self) -> Checkpoint | None:
        """The last saved checkpoint, or None to start from the beginning."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Persists ``checkpoint`` (which includes the counters)."""
        ...

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        """Persists the last checkpoint and how the run ended."""
        ...


class MemoryCheckpointStore:
    """Keeps checkpoints in memory (no resume across processes): for runs without a store."""

    def __init__(self, initial: Checkpoint | None = None) -> None:
        self.checkpoint = initial
        self.saves: list[Checkpoint] = []
        self.outcome: Outcome | None = None

    def load(self) -> Checkpoint | None:
        return self.checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.saves.append(checkpoint)

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self.checkpoint = checkpoint
        self.outcome = outcome


class FileCheckpointStore:
    """A JSON file, replaced atomically (write to a temporary file, fsync, rename)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Checkpoint | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return Checkpoint.from_dict(data.get("checkpoint", data))

    def _write(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save(self, checkpoint: Checkpoint) -> None:
        self._write({"checkpoint": checkpoint.to_dict()})

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self._write({"checkpoint": checkpoint.to_dict(), "outcome": asdict(outcome)})


@dataclass(frozen=True)
class ChunkDone:
    """What the watermark needs to know about a finished chunk."""

    seq: int
    end_offset: int
    end_row: int
    end_line: int
    rows_read: int
    rows_published: int
    rows_failed: int
    nbytes: int


class Watermark:
    """The contiguous low-watermark over chunks finished out of order.

    Chunks are numbered 0, 1, 2, ... in file order. The watermark only passes chunk ``k`` when
    every chunk before it has finished, so it is never ahead of an unacknowledged row.
    """

    def __init__(self, start: Checkpoint) -> None:
        self.checkpoint = start
        self.next_seq = 0
        self._done: dict[int, ChunkDone] = {}

    @property
    def pending(self) -> int:
        """Finished chunks waiting for an earlier one."""
        return len(self._done)

    def finish(self, chunk: ChunkDone) -> bool:
        """Records a finished chunk; returns True if the watermark moved."""
        if chunk.seq < self.next_seq or chunk.seq in self._done:
            raise ValueError(f"chunk {chunk.seq} finished twice")
        self._done[chunk.seq] = chunk
        moved = False
        while self.next_seq in self._done:
            c = self._done.pop(self.next_seq)
            cp = self.checkpoint
            self.checkpoint = replace(
                cp,
                byte_offset=c.end_offset,
                row=c.end_row,
                line=c.end_line,
                counters=cp.counters.plus(c.rows_read, c.rows_published, c.rows_failed, c.nbytes),
                time=now_rfc3339(),
            )
            self.next_seq += 1
            moved = True
        return moved
