"""A checkpoint (where a resumed run starts), with the counters that travel with it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


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

