"""Checkpoints: where a resumed run starts, and the stores that keep them.

A checkpoint ``(byte_offset, row, line)`` promises that every row before ``byte_offset`` has been
acknowledged by Kafka (or accounted for as a bad row). It always sits on a record boundary and
only moves forward. The worker computes it as the contiguous low-watermark of finished chunks
(:class:`Watermark`), because chunks are acknowledged out of order.

Layout: ``model`` (:class:`Checkpoint`, :class:`Counters`, :class:`Outcome`), ``watermark``
(:class:`Watermark`), ``store`` (the :class:`CheckpointStore` protocol, and the memory and file
stores of the command line), ``kube`` (:class:`~.kube.KubeStatusStore`, the operator's store
over the CsvIngestion status subresource; imported on its own, as it needs the Kubernetes
client).
"""

from __future__ import annotations

from ingest_worker.checkpoint.model import Checkpoint, Counters, Outcome, now_rfc3339
from ingest_worker.checkpoint.store import (
    CheckpointStore,
    FileCheckpointStore,
    MemoryCheckpointStore,
)
from ingest_worker.checkpoint.watermark import ChunkDone, Watermark

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "ChunkDone",
    "Counters",
    "FileCheckpointStore",
    "MemoryCheckpointStore",
    "Outcome",
    "Watermark",
    "now_rfc3339",
]
