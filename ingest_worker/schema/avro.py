"""The Avro schema of a file's rows, and a registered Avro schema read back into columns.

One record per row: a field per column in the file's order (nullable ones as ``["null", T]``
with a null default, so a later file may add them under BACKWARD compatibility), then the
metadata fields the ingestion adds (``_source``, ``_line``, ``_id``). Field names are the column
names made valid Avro names (other characters as ``_``); the CSV name is kept in the field's
``doc`` when it differs.
"""

from __future__ import annotations

import re
from typing import Any

from ingest_worker.csv.dialect import ConfigError
from ingest_worker.schema.columns import (
    BOOL,
    DATE,
    DECIMAL,
    FLOAT,
    INT,
    STRING,
    TIMESTAMP,
    ColumnType,
)

_INVALID = re.compile(r"[^A-Za-z0-9_]")
METADATA_TYPES = {"_source": "string", "_line": "long", "_id": "string"}


def field_name(column: str) -> str:
    """A column name as a valid Avro name."""
    name = _INVALID.sub("_", column) or "_"
    return f"_{name}" if name[0].isdigit() else name


def field_names(columns: tuple[str, ...]) -> list[str]:
    names = [field_name(c) for c in columns]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(f"columns map to the same Avro field name: {', '.join(clashes)} "
                          "(characters other than letters, digits and _ become _)")
    return names


def _avro_type(t: ColumnType) -> Any:
    return {
        STRING: "string",
        INT: "long",
        FLOAT: "double",
        BOOL: "boolean",
        DECIMAL: {"type": "bytes", "logicalType": "decimal", "precision": t.precision,
                  "scale": t.scale},
        DATE: {"type": "int", "logicalType": "date"},
        TIMESTAMP: {"type": "long", "logicalType": "timestamp-micros"},
    }[t.type]


def record_schema(
    name: str, columns: tuple[str, ...], types: list[ColumnType], metadata: tuple[str, ...]
) -> dict[str, Any]:
    """The record schema of rows with these columns and metadata fields."""
    namespace, _, short = name.rpartition(".")
    fields: list[dict[str, Any]] = []
    for column, fname, t in zip(columns, field_names(columns), types, strict=True):
        f: dict[str, Any] = {"name": fname}
        if t.nullable:
            f["type"] = ["null", _avro_type(t)]
            f["default"] = None
        else:
            f["type"] = _avro_type(t)
        if fname != column:
            f["doc"] = column
        fields.append(f)
    fields += [{"name": m, "type": METADATA_TYPES[m]} for m in metadata]
    schema: dict[str, Any] = {"type": "record", "name": short}
    if namespace:
        schema["namespace"] = namespace
    schema["fields"] = fields
    return schema


def _column_type(ftype: Any) -> ColumnType | str:
    """The column type of a field's Avro type, or why csvkafka cannot write it."""
    nullable = False
    if isinstance(ftype, list):
        branches = [b for b in ftype if b != "null"]
        if len(branches) != 1 or len(ftype) != 2 or ftype[0] != "null":
            return f"the union {ftype} (only [\"null\", T] is written)"
        nullable, ftype = True, branches[0]
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    base = ftype.get("type") if isinstance(ftype, dict) else ftype
    simple = {"string": STRING, "long": INT, "double": FLOAT, "boolean": BOOL}
    if logical is None and base in simple:
        return ColumnType(simple[base], nullable=nullable)
    if (base, logical) == ("bytes", "decimal"):
        return ColumnType(DECIMAL, nullable=nullable, precision=int(ftype["precision"]),
                          scale=int(ftype.get("scale", 0)))
    if (base, logical) == ("int", "date"):
        return ColumnType(DATE, nullable=nullable)
    if (base, logical) == ("long", "timestamp-micros"):
        return ColumnType(TIMESTAMP, nullable=nullable)
    return f"the type {ftype}"


def columns_of(schema: dict[str, Any]) -> tuple[list[tuple[str, ColumnType]], tuple[str, ...]]:
    """A registered record schema's columns (field name, type) in order, and its metadata
    fields (which must come last); ConfigError when a field cannot be written."""
    if schema.get("type") != "record":
        raise ConfigError("the registered schema is not an Avro record")
    columns: list[tuple[str, ColumnType]] = []
    metadata: list[str] = []
    for f in schema["fields"]:
        name = f["name"]
        if name in METADATA_TYPES:
            if f["type"] != METADATA_TYPES[name]:
                raise ConfigError(f"the schema's field {name} is {f['type']}, not "
                                  f"{METADATA_TYPES[name]}")
            metadata.append(name)
            continue
        if metadata:
            raise ConfigError(f"the schema's field {name} comes after the metadata fields")
        t = _column_type(f["type"])
        if isinstance(t, str):
            raise ConfigError(f"the schema's field {name} has {t}, which a CSV column is never "
                              "written as")
        columns.append((name, t))
    return columns, tuple(metadata)
