"""The store interface, and the stores that need nothing but the process: memory and a file.

Any object with the three methods of :class:`CheckpointStore` works; the worker calls them from
one thread only. The CsvIngestion's status is the third store (:mod:`.kube`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ingest_worker.checkpoint.model import Checkpoint, Outcome


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
    """A JSON file, replaced atomically (write to a temporary file, fsync, rename). It keeps the
    settled schema beside the checkpoint, as status does."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._schema: dict[str, Any] | None = None  # read once: saves keep it, not re-read it
        self._schema_read = False

    def _read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return data

    def load(self) -> Checkpoint | None:
        data = self._read()
        if data is None or (data.keys() == {"schema"}):
            return None
        return Checkpoint.from_dict(data.get("checkpoint", data))

    def schema(self) -> dict[str, Any] | None:
        if not self._schema_read:
            self._schema = (self._read() or {}).get("schema")
            self._schema_read = True
        return self._schema

    def record_schema(self, record: dict[str, Any]) -> dict[str, Any]:
        old = self.schema()
        if old is not None and old.get("restart") == record.get("restart"):
            return old
        self._write({**(self._read() or {}), "schema": record})
        self._schema = record
        return record

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

    def _kept(self) -> dict[str, Any]:
        schema = self.schema()
        return {} if schema is None else {"schema": schema}

    def save(self, checkpoint: Checkpoint) -> None:
        self._write({"checkpoint": checkpoint.to_dict(), **self._kept()})

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self._write({"checkpoint": checkpoint.to_dict(), "outcome": asdict(outcome),
                     **self._kept()})

