"""A column's type, resolved once from the spec (declared), the sample (inferred) or the registry.

:class:`ColumnType` is what the compiled encoder converts fields by (``core/src/types.rs`` holds
the rules) and what the schemas of :mod:`.avro` and :mod:`.jsonschema` are written from and read
back into: the one description of a column every part of the worker shares.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ingest_worker.api.spec import ColumnType as SpecType
from ingest_worker.api.spec import TypedColumn

STRING, INT, FLOAT, BOOL, DECIMAL, DATE, TIMESTAMP = (
    "string", "int", "float", "bool", "decimal", "date", "timestamp")
TYPES = (STRING, INT, FLOAT, BOOL, DECIMAL, DATE, TIMESTAMP)
MAX_PRECISION = 38
_OFFSET = re.compile(r"^([+-])([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True)
class ColumnType:
    """How one column's fields convert, and how its values are written."""

    type: str = STRING
    nullable: bool = False
    precision: int = MAX_PRECISION
    scale: int = 0
    format: str | None = None
    """date, timestamp: None (ISO 8601), epochSeconds/Millis/Micros, or a %-pattern."""
    timezone: str | None = None
    """timestamp: the zone of a value without one, as an offset (+01:00); None is UTC."""

    @classmethod
    def of(cls, declared: SpecType | TypedColumn | str) -> ColumnType:
        """A columnTypes entry of the spec: a type name (nullable unless a string, as empty
        typed fields have always been null), or the object form."""
        if isinstance(declared, TypedColumn):
            t = str(declared.type.value)
            nullable = declared.nullable if declared.nullable is not None else t != STRING
            tz = declared.timezone
            return cls(
                type=t,
                nullable=nullable,
                precision=declared.precision or MAX_PRECISION,
                scale=declared.scale or 0,
                format=None if declared.format == "iso8601" else declared.format,
                timezone=None if tz in (None, "UTC", "Z", "+00:00") else tz,
            )
        t = str(declared.value) if isinstance(declared, SpecType) else str(declared)
        if t not in TYPES:
            raise ValueError(f"unknown column type {t!r}")
        return cls(type=t, nullable=t != STRING)

    @property
    def offset_seconds(self) -> int:
        m = _OFFSET.match(self.timezone or "+00:00")
        if m is None:
            raise ValueError(f"not a UTC offset: {self.timezone!r}")
        secs = int(m[2]) * 3600 + int(m[3]) * 60
        return -secs if m[1] == "-" else secs

    def core(self) -> tuple[str, bool, int, int, str | None, int]:
        """The compiled encoder's description of the column."""
        return (self.type, self.nullable, self.precision, self.scale, self.format,
                self.offset_seconds)

    def to_wire(self) -> dict[str, Any]:
        """The compact form: what differs from a plain string column."""
        return {k: v for k, v in asdict(self).items()
                if v != getattr(ColumnType, k) or k == "type"}
