"""The worker's side of unit checkpoints: pure conversions and the batching rule."""

from __future__ import annotations

from ingest_worker.api.units import (
    UnitCheckpoint,
    UnitCheckpointed,
    UnitCompleted,
    UnitKind,
    UnitsStatus,
    UnitStarted,
    apply,
)
from ingest_worker.checkpoint.model import Checkpoint, Counters
from ingest_worker.checkpoint.units import _merge, from_unit, to_unit


def checkpoint(offset: int, row: int) -> Checkpoint:
    return Checkpoint(byte_offset=offset, row=row, line=row + 2, source_url="s3://b/f.csv",
                      source_version="v1", counters=Counters(row, row, 0, offset, 1000),
                      time="2026-01-01T00:00:00Z")


def test_a_workers_checkpoint_is_a_units_and_back_field_for_field() -> None:
    cp = checkpoint(500, 40)
    unit = to_unit(7, cp)
    assert (unit.id, unit.byte_offset, unit.row, unit.line) == (7, 500, 40, 42)
    assert unit.counters.bytes_total == 1000 and unit.source_version == "v1"
    assert from_unit(unit, "s3://b/f.csv") == cp


def test_a_restart_stays_one_when_a_checkpoint_follows_it_in_the_same_batch() -> None:
    status = UnitsStatus.begin(UnitKind.FILES, 2, plan="d")
    status = apply(status, [UnitCheckpointed(to_unit(0, checkpoint(900, 80)))])
    # A retried file at a new version starts again at 0; a checkpoint follows before the write.
    merged = _merge(UnitStarted(UnitCheckpoint.at_start(0)),
                    UnitCheckpointed(to_unit(0, checkpoint(300, 20))))
    assert isinstance(merged, UnitStarted)
    after = apply(status, [merged])
    assert after.active[0].byte_offset == 300  # not left at 900 as a stale checkpoint would be
    assert after.counters.rows_read == 20
    # An end replaces what came before it.
    assert isinstance(_merge(merged, UnitCompleted(to_unit(0, checkpoint(1000, 90)))),
                      UnitCompleted)
