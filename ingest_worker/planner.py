"""The plan of a run with work units: taken once, recorded in the cluster, read by every pod.

Index 0 of the run's Indexed Job lists the files (a prefix or a glob), cuts the uncompressed
files larger than ``worker.shardBytes`` into record-aligned shards (:mod:`.plan.shards`, with
ranged reads pinned to the listed version), and records the plan, gzip-compressed, in the
run's CsvIngestionPlan, which the operator made empty with the run (an object of our own kind:
no rights on ConfigMaps for anyone). The write has a ``resourceVersion`` precondition, so two
planners (a restarted index 0 beside its predecessor) agree on the first plan written. Every
later pod and every retry reads that plan: the listing is never taken again, a file that
appears later is not part of the run, and the shard starts stay fixed for the file's version.
The operator empties the plan only for a run from the beginning (``spec.restart``, a new
source URL).
"""

from __future__ import annotations

import base64
import codecs
import gzip
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ingest_worker.api import GROUP, PLAN_KIND, PLAN_PLURAL, VERSION
from ingest_worker.api.client import api_client
from ingest_worker.api.spec import CsvIngestionSpec, Ordering
from ingest_worker.api.units import UnitKind
from ingest_worker.checkpoint.kube import retrying
from ingest_worker.csv.dialect import normalize_encoding
from ingest_worker.plan.globs import names_many
from ingest_worker.plan.shards import Shards, SplitDialect, plan_shards, whole
from ingest_worker.plan.units import Plan, build_plan
from ingest_worker.sources.listing import list_files, range_reader

log = logging.getLogger(__name__)

class PlanError(Exception):
    """No plan could be taken or found (the files cannot be listed, the plan is not there)."""


def _split_dialect(spec: CsvIngestionSpec) -> SplitDialect | str:
    """The bytes that decide record starts, or why the file's encoding cannot be split."""
    fmt = spec.format
    encoding = normalize_encoding(fmt.encoding)
    specials = fmt.delimiter + fmt.quote_char + (fmt.escape_char or "") + "\n\r"
    try:
        ascii_compatible = codecs.lookup(encoding).encode(specials)[0] == specials.encode()
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible or encoding.startswith(("utf-16", "utf_16", "utf-32", "utf_32")):
        return f"the encoding {fmt.encoding} does not keep delimiters, quotes and line breaks " \
               "as single bytes"
    return SplitDialect(
        delimiter=ord(fmt.delimiter),
        quote=ord(fmt.quote_char),
        escape=None if fmt.escape_char is None else ord(fmt.escape_char),
        quoted_newlines=fmt.quoted_newlines,
    )


def make_plan(spec: CsvIngestionSpec, workers: int = 8) -> Plan:
    """Lists the files and cuts the huge ones into shards (see the module's docstring)."""
    src = spec.source
    files = list_files(src.url, src.endpoint_url, src.compression)  # one file: probed
    shard_bytes = spec.worker.shard_bytes
    shards: dict[str, Shards] = {}
    split = _split_dialect(spec)
    for f in files:
        if f.compressed or f.size is None or f.size <= shard_bytes:
            continue
        if spec.ordering is Ordering.STRICT:
            continue  # one unit per file: its order holds
        if isinstance(split, str):
            shards[f.url] = whole(split)
        else:
            reader = range_reader(f.url, f.version, spec.source.endpoint_url)
            started = time.monotonic()
            shards[f.url] = plan_shards(reader, f.size, split, shard_bytes, workers=workers)
            log.info("Planned %d shards of %s in %.1fs", len(shards[f.url].starts), f.url,
                     time.monotonic() - started)
        if shards[f.url].reason:
            log.warning("%s is not split: %s", f.url, shards[f.url].reason)
    fmt = spec.format
    return build_plan(spec.source.url, files, shard_bytes=shard_bytes,
                      quoted_newlines=fmt.quoted_newlines, delimiter=fmt.delimiter,
                      quote=fmt.quote_char, escape=fmt.escape_char, shards=shards)


def unit_kind(plan: Plan) -> UnitKind:
    """Files when the source names many files, else Shards (one file cut into ranges)."""
    return UnitKind.FILES if names_many(plan.url) else UnitKind.SHARDS


def plan_total_bytes(plan: Plan) -> int | None:
    sizes = [u.length for u in plan.units]
    return None if any(n is None for n in sizes) else sum(n for n in sizes if n is not None)


class PlanStore:
    """The plan in the run's CsvIngestionPlan (same name as the CsvIngestion; ``plan.data`` is
    the canonical JSON, gzip, base64)."""

    def __init__(self, namespace: str, name: str, api: client.ApiClient | None = None,
                 outage_budget: float = 300.0) -> None:
        self.namespace, self.name = namespace, name
        self.objects = client.CustomObjectsApi(api or api_client())
        self.outage_budget = outage_budget

    def _get(self) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            body: dict[str, Any] = self.objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLAN_PLURAL, self.name)
            return body

        try:
            body: dict[str, Any] = retrying("reading the plan", get, self.outage_budget)
        except ApiException as e:
            if e.status in (403, 404):
                raise PlanError(f"the {PLAN_KIND} {self.namespace}/{self.name} is not readable "
                                f"({e.status} {e.reason}): the operator makes it with the "
                                "run") from None
            raise
        return body

    @staticmethod
    def _decode(body: dict[str, Any]) -> Plan | None:
        data = (body.get("plan") or {}).get("data")
        return None if not data else Plan.loads(gzip.decompress(base64.b64decode(data)).decode())

    def load(self) -> Plan | None:
        return self._decode(self._get())

    def save(self, plan: Plan) -> Plan:
        """Records ``plan`` unless a plan is there already; returns the plan in force."""
        blob = base64.b64encode(gzip.compress(plan.dumps().encode(), 6, mtime=0)).decode()
        record = {"sourceUrl": plan.url, "digest": plan.digest,
                  "files": len({u.url for u in plan.units}), "units": len(plan.units),
                  "data": blob}
        total = plan_total_bytes(plan)
        if total is not None:
            record["bytes"] = total
        while True:
            body = self._get()
            existing = self._decode(body)
            if existing is not None:
                return existing
            body["plan"] = record
            try:
                # resourceVersion is in the body: a replace is conditional on it.
                self.objects.replace_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLAN_PLURAL, self.name, body)
                return plan
            except ApiException as e:
                if e.status != 409:  # 409: another planner wrote first; read theirs
                    raise

    def wait(self, stop: Callable[[], bool], timeout: float, poll: float = 1.0) -> Plan:
        """The plan, once index 0 recorded it."""
        deadline = time.monotonic() + timeout
        while True:
            plan = self.load()
            if plan is not None:
                return plan
            if stop() or time.monotonic() > deadline:
                raise PlanError(f"no plan in {PLAN_KIND} {self.namespace}/{self.name} after "
                                f"{timeout:.0f}s: index 0 plans the run (see its log)")
            time.sleep(poll)
