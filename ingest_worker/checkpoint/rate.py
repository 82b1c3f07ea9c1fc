"""The rate and ETA a worker shows in its status (``rowsPerSecond``, ``eta``): pure arithmetic.

The rate is measured between two checkpoints the store wrote (rows and bytes over the seconds
between them) and smoothed with an exponentially weighted average, so one slow interval (a
broker's pause, a garbage collection) does not swing the ETA. The ETA is the bytes left over the
byte rate: bytes, not rows, because the file's size is known and its row count is not.
"""

from __future__ import annotations

from dataclasses import dataclass

SMOOTHING = 0.3
"""Weight of the newest interval in the average: about the last three intervals count."""


@dataclass(frozen=True)
class Sample:
    """Where the run was at one written checkpoint: a monotonic clock's reading (seconds), and
    the rows and bytes read by then."""

    seconds: float
    rows: int
    bytes: int


@dataclass(frozen=True)
class Rate:
    rows_per_second: float
    bytes_per_second: float


def next_rate(
    previous: Rate | None, start: Sample, end: Sample, smoothing: float = SMOOTHING
) -> Rate | None:
    """The smoothed rate after the interval from ``start`` to ``end`` (``previous`` when the
    interval is empty: no time passed, or the counters went back)."""
    elapsed = end.seconds - start.seconds
    rows, nbytes = end.rows - start.rows, end.bytes - start.bytes
    if elapsed <= 0 or rows < 0 or nbytes < 0:
        return previous
    now = Rate(rows / elapsed, nbytes / elapsed)
    if previous is None:
        return now
    return Rate(
        smoothing * now.rows_per_second + (1 - smoothing) * previous.rows_per_second,
        smoothing * now.bytes_per_second + (1 - smoothing) * previous.bytes_per_second,
    )


def eta_seconds(rate: Rate | None, bytes_read: int, bytes_total: int | None) -> float | None:
    """Seconds until the end at ``rate``, or None when unknown (no size, or nothing moves)."""
    if rate is None or not bytes_total or rate.bytes_per_second <= 0:
        return None
    return max(0, bytes_total - bytes_read) / rate.bytes_per_second


def format_eta(seconds: float) -> str:
    """A short duration as ``kubectl`` prints ages: ``45s``, ``4m10s``, ``1h02m``, ``2d03h``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
