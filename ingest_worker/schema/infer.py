"""Column types inferred from a sample of the file's first rows.

Each column gets the narrowest type every sampled value fits, tried in the order of
:data:`CANDIDATES` (bool before int, int before float, date before timestamp, string last), by
the compiled encoder's own conversion rules (``csvkafka_core.check``): an inferred type never
refuses a value the sample held. A typed column is nullable when a sampled field was empty; an
empty string column stays the empty string. Bool is inferred only from true/false, never from
0/1 or y/n, which are as likely codes or names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from csvkafka_core import check

from ingest_worker.schema.columns import (
    BOOL,
    DATE,
    FLOAT,
    INT,
    STRING,
    TIMESTAMP,
    ColumnType,
)

CANDIDATES = (BOOL, INT, FLOAT, DATE, TIMESTAMP)
_BOOL_WORDS = frozenset({"true", "false"})


def infer_column(values: Sequence[str], avro: bool) -> ColumnType:
    """The narrowest type of one column's sampled values."""
    present = [v.strip() for v in values if v.strip()]
    nullable = len(present) < len(values)
    if not present:
        return ColumnType(STRING)
    for t in CANDIDATES:
        if t == BOOL and any(v.lower() not in _BOOL_WORDS for v in present):
            continue
        probe = ColumnType(t, nullable=True)
        if all(check(probe.core(), v, avro) is None for v in present):
            return ColumnType(t, nullable=nullable)
    return ColumnType(STRING)


def infer(
    columns: Sequence[str], rows: Iterable[Sequence[str]], avro: bool
) -> dict[str, ColumnType]:
    """Types of every column from sampled rows (rows of another field count are skipped:
    they are bad rows whatever the types)."""
    by_column: list[list[str]] = [[] for _ in columns]
    for row in rows:
        if len(row) != len(columns):
            continue
        for values, v in zip(by_column, row, strict=True):
            values.append(v)
    return {c: infer_column(v, avro) for c, v in zip(columns, by_column, strict=True)}


def sample_rows(data: bytes, encoding: str, dialect: dict[str, object], limit: int
                ) -> list[list[str]]:
    """Up to ``limit`` records of ``data`` (the file from its first data row), split by
    Python's csv; a last record cut by the end of ``data`` is left out."""
    text = data.decode(encoding, errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)  # type: ignore[arg-type]
    try:
        for row in reader:
            if row and any(row):
                rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error:
        pass  # a malformed record ends the sample: what came before is still a fair sample
    return rows
