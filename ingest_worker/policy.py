"""The error budget: when bad rows are too many for the run to go on (pure; unit-tested)."""

from __future__ import annotations

from ingest_worker.api.spec import ErrorPolicy

MIN_ROWS_FOR_RATIO = 1000
"""The ratio is judged from this many rows on: two bad rows of the first three are no trend."""


def over_budget(policy: ErrorPolicy, failed: int, read: int) -> str | None:
    """Why the run must stop, or None while bad rows stay within ``policy``."""
    if policy.max_errors is not None and failed > policy.max_errors:
        return f"too many bad rows: {failed} > maxErrors {policy.max_errors}"
    ratio = policy.max_error_ratio
    if ratio is not None and read >= MIN_ROWS_FOR_RATIO and failed / read > ratio:
        return (f"too many bad rows: {failed} of {read} ({failed / read:.2%}) > maxErrorRatio "
                f"{ratio}")
    return None
