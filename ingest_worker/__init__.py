"""The data plane: stream a CSV file into Kafka, fast, with bounded memory and checkpoints.

Public API (what the operator and the CLI call)::

    from ingest_worker import run_ingestion, FileCheckpointStore
    result = run_ingestion(spec, FileCheckpointStore("ckpt.json"))

Names are imported lazily so the worker processes do not pay for what they do not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest_worker.checkpoint import (
        Checkpoint,
        CheckpointStore,
        Counters,
        FileCheckpointStore,
        MemoryCheckpointStore,
        Outcome,
    )
    from ingest_worker.run import IngestResult, Tuning, run_ingestion

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "Counters",
    "FileCheckpointStore",
    "IngestResult",
    "MemoryCheckpointStore",
    "Outcome",
    "Tuning",
    "run_ingestion",
]

_WHERE = {
    "Checkpoint": "checkpoint",
    "CheckpointStore": "checkpoint",
    "Counters": "checkpoint",
    "FileCheckpointStore": "checkpoint",
    "MemoryCheckpointStore": "checkpoint",
    "Outcome": "checkpoint",
    "IngestResult": "run",
    "Tuning": "run",
    "run_ingestion": "run",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"ingest_worker.{_WHERE[name]}"), name)
    raise AttributeError(name)
