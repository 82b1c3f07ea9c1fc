"""The JSON Schema of a file's rows (valueFormat jsonSchema), and a registered one read back.

The values are the same JSON objects as valueFormat json; the schema states their contract: an
object with a property per column (``["T", "null"]`` when nullable) and the metadata
properties, closed (``additionalProperties: false``, so adding a nullable column is a BACKWARD
compatible change), every non-nullable property required. Decimals, dates and timestamps are
strings in JSON; their exact type rides in an ``x-csvkafka`` annotation a consumer may ignore.
"""

from __future__ import annotations

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

DRAFT = "http://json-schema.org/draft-07/schema#"
METADATA_TYPES = {"_source": "string", "_line": "integer", "_id": "string"}
_JSON = {STRING: "string", INT: "integer", FLOAT: "number", BOOL: "boolean", DECIMAL: "string",
         DATE: "string", TIMESTAMP: "string"}


def _property(t: ColumnType) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": [_JSON[t.type], "null"] if t.nullable else _JSON[t.type]}
    if t.type == DECIMAL:
        frac = f"(\\.[0-9]{{{t.scale}}})" if t.scale else ""
        prop["pattern"] = f"^-?[0-9]+{frac}$"
        prop["x-csvkafka"] = {"type": DECIMAL, "precision": t.precision, "scale": t.scale}
    elif t.type == DATE and t.format is None:
        prop["format"] = "date"
    if t.type in (DATE, TIMESTAMP):
        prop["x-csvkafka"] = {"type": t.type, "format": t.format or "iso8601"}
    return prop


def object_schema(
    title: str, columns: tuple[str, ...], types: list[ColumnType], metadata: tuple[str, ...]
) -> dict[str, Any]:
    props = {c: _property(t) for c, t in zip(columns, types, strict=True)}
    props |= {m: {"type": METADATA_TYPES[m]} for m in metadata}
    required = [c for c, t in zip(columns, types, strict=True) if not t.nullable]
    return {
        "$schema": DRAFT,
        "title": title,
        "type": "object",
        "properties": props,
        "required": required + list(metadata),
        "additionalProperties": False,
    }


def _column_type(name: str, prop: dict[str, Any]) -> ColumnType:
    jtype = prop.get("type")
    types = jtype if isinstance(jtype, list) else [jtype]
    nullable = "null" in types
    base = [t for t in types if t != "null"]
    note = prop.get("x-csvkafka") or {}
    if len(base) == 1 and base[0] == "string" and note.get("type") == DECIMAL:
        return ColumnType(DECIMAL, nullable, precision=int(note["precision"]),
                          scale=int(note["scale"]))
    if len(base) == 1 and base[0] == "string" and note.get("type") in (DATE, TIMESTAMP):
        fmt = note.get("format")
        return ColumnType(note["type"], nullable, format=None if fmt == "iso8601" else fmt)
    if len(base) == 1 and base[0] == "string" and prop.get("format") == "date":
        return ColumnType(DATE, nullable)
    by_json = {"string": STRING, "integer": INT, "number": FLOAT, "boolean": BOOL}
    if len(base) == 1 and base[0] in by_json:
        return ColumnType(by_json[base[0]], nullable)
    raise ConfigError(f"the schema's property {name} has the type {jtype}, which a CSV column "
                      "is never written as")


def columns_of(schema: dict[str, Any]) -> tuple[list[tuple[str, ColumnType]], tuple[str, ...]]:
    """A registered object schema's columns (property, type) and metadata properties."""
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ConfigError("the registered JSON Schema is not an object with properties")
    columns: list[tuple[str, ColumnType]] = []
    metadata: list[str] = []
    for name, prop in schema["properties"].items():
        if name in METADATA_TYPES:
            metadata.append(name)
        else:
            columns.append((name, _column_type(name, prop)))
    return columns, tuple(metadata)
