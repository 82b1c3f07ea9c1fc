"""Generates the CsvIngestion CRD from the pydantic models in ``ingest_worker.api``.

``python -m ingest_operator.crdgen > crds/csvingestion.yaml`` writes it;
``python -m ingest_operator.crdgen --check crds/csvingestion.yaml`` fails when the committed file
is stale. The models are the one source of truth: the API server validates with the same
constraints (required fields, enums, minimums, patterns) the worker parses with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ingest_operator import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.api.status import CsvIngestionStatus

# JSON-schema keywords that a structural CRD schema accepts and that we carry over.
_KEPT = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _name_or_object(alts: list[dict[str, Any]], defs: dict[str, Any]) -> bool:
    kinds = sorted(_resolve(a, defs).get("type", "") for a in alts)
    return kinds == ["object", "string"]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inlines $refs, drops null alternatives and keywords a structural schema refuses."""
    node = dict(node)
    if "$ref" in node:
        target = _resolve(defs[node.pop("$ref").rsplit("/", 1)[-1]], defs)
        node = {**target, **node}  # the field's own description and default win
    if "allOf" in node and len(node["allOf"]) == 1:
        target = _resolve(node.pop("allOf")[0], defs)
        node = {**target, **node}
    if "anyOf" in node:
        # Optional[X] is X | null: in a CRD an absent field is the null.
        alts = [a for a in node.pop("anyOf") if a.get("type") != "null"]
        if len(alts) == 2 and _name_or_object(alts, defs):
            # A type name or an object with options (columnTypes): a structural schema has one
            # type per node, so the node keeps any value and the models validate it.
            kept = {k: v for k, v in node.items() if k == "description"}
            return {**kept, "x-kubernetes-preserve-unknown-fields": True}
        if len(alts) != 1:
            raise ValueError(f"unsupported union in schema: {alts}")
        node = {**_resolve(alts[0], defs), **node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEPT:
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            if isinstance(value, dict):
                out[key] = _resolve(value, defs)
            # additionalProperties: false (extra="forbid") is implied by a structural schema:
            # unknown fields are pruned, and kubectl's strict field validation reports them.
        elif key == "description":
            out[key] = _one_line(value)
        elif key == "default" and value is None:
            continue  # absent is the null
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return _ordered(out)


_ORDER = ("description", "type")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Description and type first: the generated file reads like a hand-written CRD."""
    head = {k: node[k] for k in _ORDER if k in node}
    return {**head, **{k: v for k, v in node.items() if k not in head}}


def _strip_defaults(node: dict[str, Any]) -> None:
    node.pop("default", None)
    for child in (node.get("properties") or {}).values():
        _strip_defaults(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _strip_defaults(node[key])


def _add_factory_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Gives fields with a default_factory a default (pydantic's JSON schema omits them).

    A nested object defaulting to ``{}`` makes the API server fill in its own defaults, so
    ``kubectl get -o yaml`` shows the effective settings.
    """
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = props.get(alias)
        if prop is None:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _add_factory_defaults(prop, ann)
        if field.default_factory is not None and "default" not in prop:
            value = field.default_factory()  # type: ignore[call-arg]
            prop["default"] = (
                value.model_dump(
                    by_alias=True, exclude_none=True, mode="json", exclude_defaults=True
                )
                if isinstance(value, BaseModel)
                else value
            )


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _resolve(raw, raw.get("$defs", {}))
    _add_factory_defaults(schema, model)
    return schema


def _status_schema() -> dict[str, Any]:
    schema = model_schema(CsvIngestionStatus)
    # Status is written by the operator and the workers only: no server-side defaults there.
    _strip_defaults(schema)
    conditions = schema["properties"]["conditions"]
    # Conditions are a map keyed by type: server-side apply merges them per type.
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions.pop("default", None)
    return schema


def build_crd() -> dict[str, Any]:
    spec_schema = model_schema(CsvIngestionSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "csv-kafka"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "csvkafka"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                        # "Files 812/5000" or "Shards 7/12" (empty for a single file).
                        {"name": "Units", "type": "string", "jsonPath": ".status.units.progress"},
                        {"name": "Rows", "type": "integer", "jsonPath": ".status.rowsPublished"},
                        {"name": "Errors", "type": "integer", "jsonPath": ".status.rowsFailed"},
                        # -o wide: the worker's smoothed rate and the time left, while it runs.
                        {
                            "name": "Rate",
                            "type": "number",
                            "jsonPath": ".status.rowsPerSecond",
                            "description": "Rows read per second",
                            "priority": 1,
                        },
                        {
                            "name": "ETA",
                            "type": "string",
                            "jsonPath": ".status.eta",
                            "description": "Time left at the current rate",
                            "priority": 1,
                        },
                        {
                            "name": "Attempts",
                            "type": "integer",
                            "jsonPath": ".status.attempts",
                            "priority": 1,
                        },
                        {
                            "name": "Message",
                            "type": "string",
                            "jsonPath": ".status.message",
                            "priority": 1,
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A CsvIngestion streams one CSV file into a Kafka topic, "
                                "resumably and at least once, through a worker Job."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated subtrees in full: no YAML anchors in a file people read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = (
        "# Generated by `python -m ingest_operator.crdgen` from ingest_worker/api/: "
        "do not edit.\n"
    )
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", metavar="FILE", type=Path, help="exit 1 if FILE differs from the generated CRD"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check is not None:
        if not args.check.exists() or args.check.read_text() != text:
            print(
                f"{args.check} is stale: run `python -m ingest_operator.crdgen > {args.check}`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
