"""Work units and plans: the compact JSON round trip, the digest, the plan of a listing."""

from __future__ import annotations

import json

import pytest

from ingest_worker.plan.shards import Shards
from ingest_worker.plan.units import FileEntry, Plan, WorkUnit, build_plan


def test_unit_json_is_compact_and_round_trips() -> None:
    first = WorkUnit(0, "s3://b/a.csv", "v1", 1000, 0, 400)
    assert first.to_json() == {"i": 0, "u": "s3://b/a.csv", "v": "v1", "n": 1000, "e": 400}
    for u in (first, WorkUnit(1, "s3://b/a.csv", "v1", 1000, 400, None, 17),
              WorkUnit(2, "s3://b/b.csv.gz", "e", None, compressed=True),
              WorkUnit(3, "s3://b/c.csv", "e", 10, 5, None, None)):
        assert WorkUnit.from_json(json.loads(json.dumps(u.to_json()))) == u


def test_unit_length() -> None:
    assert WorkUnit(0, "u", "v", 1000, 0, 400).length == 400
    assert WorkUnit(0, "u", "v", 1000, 400).length == 600
    assert WorkUnit(0, "u", "v", None).length is None


def test_bad_units_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        WorkUnit(0, "u", "v", 10, 5, 5)
    with pytest.raises(ValueError, match="compressed"):
        WorkUnit(0, "u", "v", 10, 5, None, compressed=True)
    with pytest.raises(ValueError, match="unknown"):
        WorkUnit.from_json({"i": 0, "u": "u", "v": "v", "x": 1})


FILES = [FileEntry("s3://b/d/b.csv", "2", 900, False),
         FileEntry("s3://b/d/a.csv.gz", "1", 5000, True),
         FileEntry("s3://b/d/c.csv", "3", None, False)]


def plan(**shards: Shards) -> Plan:
    return build_plan("s3://b/d/", FILES, shard_bytes=300, quoted_newlines=True, delimiter=",",
                      quote='"', escape=None,
                      shards={f"s3://b/d/{k}.csv": v for k, v in shards.items()})


def test_build_plan_numbers_units_by_url_then_range() -> None:
    p = plan(b=Shards((0, 310, 620), (1, 9, 20)))
    assert [(u.id, u.url, u.start, u.end, u.line) for u in p.units] == [
        (0, "s3://b/d/a.csv.gz", 0, None, 1),
        (1, "s3://b/d/b.csv", 0, 310, 1),
        (2, "s3://b/d/b.csv", 310, 620, 9),
        (3, "s3://b/d/b.csv", 620, None, 20),
        (4, "s3://b/d/c.csv", 0, None, 1),
    ]
    assert p.units[0].compressed and not p.units[1].compressed
    assert build_plan("s3://b/d/", list(reversed(FILES)), shard_bytes=300, quoted_newlines=True,
                      delimiter=",", quote='"', escape=None,
                      shards={"s3://b/d/b.csv": Shards((0, 310, 620), (1, 9, 20))}) == p


def test_plan_round_trips_and_its_digest_says_whether_two_plans_agree() -> None:
    p = plan(b=Shards((0, 310), (1, 9)))
    again = Plan.loads(p.dumps())
    assert again == p and again.digest == p.digest
    assert plan(b=Shards((0, 311), (1, 9))).digest != p.digest  # another start
    assert plan().digest != p.digest
    other = Plan(p.url, p.shard_bytes, False, p.delimiter, p.quote, p.escape, p.units)
    assert other.digest != p.digest  # another input
    assert len(p.digest) == 64


def test_plan_ids_are_dense() -> None:
    with pytest.raises(ValueError, match="ids"):
        Plan("u", None, True, ",", '"', None, (WorkUnit(1, "u", "v", 1),))


def test_ten_thousand_files_fit_an_object() -> None:
    files = [FileEntry(f"s3://bucket/exports/2024/part-{i:05d}.csv", f"{i:032x}", 10**8, False)
             for i in range(10_000)]
    p = build_plan("s3://bucket/exports/2024/", files, shard_bytes=None, quoted_newlines=True,
                   delimiter=",", quote='"', escape=None)
    # A ConfigMap holds up to 1 MiB; URLs are written after the listing prefix.
    text = p.dumps()
    assert len(text.encode()) < 1_048_576
    assert '"r":"part-00042.csv"' in text
    assert Plan.loads(text) == p
