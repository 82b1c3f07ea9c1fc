"""Work units and the plan that lists them.

A work unit is a file, or a record-aligned byte range of one, that one index of the Indexed
Job streams and checkpoints on its own. The plan holds the units and the inputs that
determined them; its digest lets every retry and every index check that it runs the plan the
run started with (a changed input is a new plan, never a mix of two).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest_worker.plan.globs import listing_prefix
from ingest_worker.plan.shards import Shards

# Short keys: a plan of 10,000 files is recorded in the cluster (an object holds at most
# 1 MiB), so every byte per unit counts. Fields at their default are left out too.
_KEYS = {"id": "i", "url": "u", "version": "v", "size": "n", "start": "s", "end": "e",
         "line": "l", "compressed": "z"}


@dataclass(frozen=True)
class WorkUnit:
    """One file, or one byte range of a file, streamed and checkpointed on its own."""

    id: int
    """Its place in the plan (0, 1, ...): the checkpoint of a unit is keyed by it."""
    url: str
    """The file's own URL (a file the run's prefix or glob selected)."""
    version: str
    """The file's version when the plan was taken (S3 version id or ETag, GCS generation,
    ...): a worker that finds another version fails the unit rather than mix two files."""
    size: int | None
    """The file's size in bytes when the plan was taken; None when the source does not say."""
    start: int = 0
    """Where its records start: 0 for the first range (the worker skips the header itself),
    else a record boundary found by the plan (never inside a quoted field)."""
    end: int | None = None
    """Where its records end (exclusive), which is the next range's ``start``; None: the end
    of the file."""
    line: int | None = 1
    """The physical line number (1-based) of the record at ``start``, for the checkpoint and
    the line numbers of bad rows; None when the plan did not count the lines before it
    (``quotedNewlines: false`` reads no pass over the file)."""
    compressed: bool = False
    """A compressed file is read from its start to its end by one unit: a byte offset in it
    is not a place a decompressor can start from."""

    def __post_init__(self) -> None:
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ValueError(f"unit {self.id}: empty or negative range [{self.start}, {self.end})")
        if self.compressed and (self.start != 0 or self.end is not None):
            raise ValueError(f"unit {self.id}: a compressed file cannot be split")

    @property
    def length(self) -> int | None:
        """Bytes in its range, or None when unknown (no size and no end)."""
        if self.end is not None:
            return self.end - self.start
        return None if self.size is None else max(self.size - self.start, 0)

    def to_json(self) -> dict[str, Any]:
        """Its compact JSON form: short keys, defaults left out."""
        out: dict[str, Any] = {"i": self.id, "u": self.url, "v": self.version}
        if self.size is not None:
            out["n"] = self.size
        if self.start:
            out["s"] = self.start
        if self.end is not None:
            out["e"] = self.end
        if self.line != 1:
            out["l"] = self.line
        if self.compressed:
            out["z"] = True
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WorkUnit:
        unknown = set(d) - set(_KEYS.values())
        if unknown:  # a newer planner's field: better to fail than to ignore what it meant
            raise ValueError(f"unknown work unit fields {sorted(unknown)}")
        return cls(id=int(d["i"]), url=str(d["u"]), version=str(d["v"]),
                   size=None if d.get("n") is None else int(d["n"]),
                   start=int(d.get("s", 0)),
                   end=None if d.get("e") is None else int(d["e"]),
                   line=None if "l" in d and d["l"] is None else int(d.get("l", 1)),
                   compressed=bool(d.get("z", False)))


@dataclass(frozen=True)
class FileEntry:
    """One file of the listing taken when the run starts."""

    url: str
    version: str
    size: int | None
    compressed: bool


@dataclass(frozen=True)
class Plan:
    """The units of a run and every input that decided them."""

    url: str
    """The run's source URL: one file, a prefix or a glob."""
    shard_bytes: int | None
    """The range size huge files were cut at; None: no file is split."""
    quoted_newlines: bool
    """``format.quotedNewlines``: whether quoted fields may hold newlines."""
    delimiter: str
    quote: str | None
    escape: str | None
    units: tuple[WorkUnit, ...] = field(default=())

    def __post_init__(self) -> None:
        if [u.id for u in self.units] != list(range(len(self.units))):
            raise ValueError("unit ids must be 0, 1, ... in order")

    def to_json(self) -> dict[str, Any]:
        # A unit's URL is written after the run's listing prefix ("r"), which every unit of a
        # prefix or a glob shares: a third of the bytes of a plan of many files.
        base = listing_prefix(self.url)
        units = []
        for u in self.units:
            d = u.to_json()
            if d["u"].startswith(base):
                d["r"] = d.pop("u")[len(base):]
            units.append(d)
        return {"url": self.url, "shardBytes": self.shard_bytes,
                "quotedNewlines": self.quoted_newlines, "delimiter": self.delimiter,
                "quote": self.quote, "escape": self.escape, "units": units}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Plan:
        base = listing_prefix(d["url"])
        units = []
        for u in d["units"]:
            if "r" in u:
                u = {**u, "u": base + u["r"]}
                del u["r"]
            units.append(WorkUnit.from_json(u))
        return cls(url=d["url"], shard_bytes=d["shardBytes"], quoted_newlines=d["quotedNewlines"],
                   delimiter=d["delimiter"], quote=d["quote"], escape=d["escape"],
                   units=tuple(units))

    def dumps(self) -> str:
        """The canonical text: the same plan always gives the same bytes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)

    @classmethod
    def loads(cls, text: str) -> Plan:
        return cls.from_json(json.loads(text))

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical text: equal digests, equal plans."""
        return hashlib.sha256(self.dumps().encode()).hexdigest()


def build_plan(
    url: str,
    files: Sequence[FileEntry],
    *,
    shard_bytes: int | None,
    quoted_newlines: bool,
    delimiter: str,
    quote: str | None,
    escape: str | None,
    shards: Mapping[str, Shards] | None = None,
) -> Plan:
    """The plan of ``files`` (the listing), each cut where ``shards[file.url]`` says.

    A file without an entry in ``shards`` (a compressed one, a small one, one whose split the
    planner refused) is one unit. Units are numbered in the order of the files' URLs, then of
    their ranges, so the same listing and the same starts always give the same plan.
    """
    shards = shards or {}
    units: list[WorkUnit] = []
    for f in sorted(files, key=lambda f: f.url):
        s = shards.get(f.url)
        if s is None or f.compressed or len(s.starts) < 2:
            units.append(WorkUnit(len(units), f.url, f.version, f.size, compressed=f.compressed))
            continue
        ends: list[int | None] = [*s.starts[1:], None]
        for start, end, line in zip(s.starts, ends, s.lines, strict=True):
            units.append(WorkUnit(len(units), f.url, f.version, f.size, start, end, line))
    return Plan(url, shard_bytes, quoted_newlines, delimiter, quote, escape, tuple(units))
