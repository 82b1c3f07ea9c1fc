"""The contiguous low-watermark of chunks acknowledged out of order: the safe checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ingest_worker.checkpoint.model import Checkpoint, now_rfc3339


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
