"""Pure unit tests of the work units' models (issue 12): the unit checkpoint, the bitmaps, the
fold of unit events into the status, the phase rules, and the status's size at 10,000 units."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from ingest_operator import crdgen
from pydantic import ValidationError

from ingest_worker.api.status import CsvIngestionStatus, status_patch
from ingest_worker.api.units import (
    ACTIVE_MAX,
    FAILED_LISTED_MAX,
    REASON_MAX_BYTES,
    UnitCheckpoint,
    UnitCheckpointed,
    UnitCompleted,
    UnitCounters,
    UnitEvent,
    UnitFailed,
    UnitKind,
    UnitsStatus,
    UnitStarted,
    UnitState,
    apply,
    count_ids,
    decode_ids,
    encode_ids,
    is_finished,
    overall_phase,
    retry_failed,
    truncate_reason,
)
from ingest_worker.checkpoint.model import Checkpoint, Counters

STATUS_BUDGET = 64 * 1024
NOW = "2025-01-01T00:00:00Z"


def wire_size(status: CsvIngestionStatus) -> int:
    """Bytes of the status as the API server stores it: compact JSON, UTF-8."""
    text = json.dumps(status.to_wire(), separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


def url(i: int) -> str:
    return f"s3://example-exports/warehouse/orders/dt=2024-06-01/part-{i:05d}-c000.snappy.csv"


def checkpoint(i: int, rows: int, *, done: bool = False, file: bool = True) -> UnitCheckpoint:
    """A realistic checkpoint of unit i, ``rows`` rows in (100 bytes a row, 1 bad in 1000)."""
    return UnitCheckpoint(
        id=i,
        source_url=url(i) if file else None,
        source_version='"9b2cf535f27731c974343645a3985328"' if file else None,
        byte_offset=rows * 100 + 57,
        row=rows,
        line=rows + 2,
        counters=UnitCounters(
            rows_read=rows,
            rows_published=rows - rows // 1000,
            rows_failed=rows // 1000,
            bytes_read=rows * 100 + 57,
            bytes_total=1_000_000_057,
        ),
        done=done,
        time=NOW,
    )


LONG_REASON = (
    "too many bad rows: 1001 > maxErrors 1000 (the error budget of this file); last: line "
    "48213: expected 14 fields, saw 13 in " + "«données ❌ 数据» " * 200
)


# --- the checkpoint -----------------------------------------------------------------------------


def test_a_whole_file_checkpoint_is_unit_zero_field_for_field() -> None:
    whole = Checkpoint(
        byte_offset=123_456,
        row=1000,
        line=1003,
        source_url="s3://b/dump.csv",
        source_version="v7",
        counters=Counters(10, 9, 1, 123_456, 999_999),
        done=False,
        time=NOW,
    )
    unit = UnitCheckpoint.from_whole_file(whole.to_dict())
    assert unit.id == 0
    assert unit.to_wire() == {"id": 0, **whole.to_dict()}
    # ... and back: the whole-file checkpoint reads the unit's wire form.
    assert Checkpoint.from_dict(unit.to_wire()) == whole


def test_a_restart_from_the_beginning_is_a_checkpoint_at_the_unit_start() -> None:
    start = UnitCheckpoint.at_start(3, byte_offset=4096, bytes_total=1024)
    assert (start.byte_offset, start.row, start.line, start.done) == (4096, 0, 1, False)
    assert start.counters == UnitCounters(bytes_total=1024)


# --- bitmaps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [0, 1, 7, 8, 9, 1000, 10_000])
def test_bitmaps_round_trip(total: int) -> None:
    rng = random.Random(total)
    for ids in (set(), set(range(total)), {i for i in range(total) if rng.random() < 0.3}):
        text = encode_ids(ids, total)
        assert decode_ids(text, total) == ids
        assert count_ids(text, total) == len(ids)


def test_bitmaps_are_compact_and_checked() -> None:
    rng = random.Random(1)
    contiguous = encode_ids(range(9000), 10_000)
    scattered = encode_ids(rng.sample(range(10_000), 5000), 10_000)
    print(f"\n10,000-unit bitmap: 9,000 contiguous {len(contiguous)} B, "
          f"5,000 random {len(scattered)} B")
    assert len(contiguous) < 100
    assert len(scattered) < 2000  # 1,250 raw bytes, base64 4/3, random bits do not compress
    with pytest.raises(ValueError, match="not in"):
        encode_ids([10], 10)
    with pytest.raises(ValueError, match="does not fit"):
        decode_ids(contiguous, 20_000)
    with pytest.raises(ValueError, match="beyond"):
        decode_ids(encode_ids([12], 16), 10)


# --- apply --------------------------------------------------------------------------------------


def test_apply_folds_a_batch_into_counts_counters_and_progress() -> None:
    status = UnitsStatus.begin(UnitKind.FILES, 5, bytes_total=5_000_000_285)
    assert status.progress == "Files 0/5"
    assert status.counts.pending == 5
    status = apply(
        status,
        [
            UnitStarted(UnitCheckpoint.at_start(0, source_url=url(0))),
            UnitStarted(UnitCheckpoint.at_start(1, source_url=url(1))),
            UnitCheckpointed(checkpoint(0, 1000)),
            UnitCheckpointed(checkpoint(1, 2000)),
            UnitCheckpointed(checkpoint(0, 3000)),
            UnitCompleted(checkpoint(1, 5000, done=True)),
            UnitCheckpointed(checkpoint(2, 10)),  # starts a pending unit
        ],
    )
    assert status.counts.to_wire() == {"pending": 2, "running": 2, "completed": 1, "failed": 0}
    assert [u.id for u in status.active] == [0, 2]
    assert status.active[0] == checkpoint(0, 3000)
    assert status.completed_ids() == {1}
    assert status.progress == "Files 1/5"
    # The sum of each unit's last checkpoint; the plan's size is kept.
    assert status.counters.rows_read == 3000 + 5000 + 10
    assert status.counters.rows_failed == 3 + 5 + 0
    assert status.counters.bytes_read == 300_057 + 500_057 + 1_057
    assert status.counters.bytes_total == 5_000_000_285


def test_apply_of_one_batch_equals_apply_of_its_parts() -> None:
    rng = random.Random(7)
    events: list[UnitEvent] = []
    for i in range(40):
        events.append(UnitStarted(UnitCheckpoint.at_start(i, source_url=url(i))))
        for rows in sorted(rng.sample(range(1, 10_000), 3)):
            events.append(UnitCheckpointed(checkpoint(i, rows)))
        end = rng.random()
        if end < 0.5:
            events.append(UnitCompleted(checkpoint(i, 10_000, done=True)))
        elif end < 0.7:
            events.append(UnitFailed(checkpoint(i, 5_000), f"unit {i} broke"))
    # Interleave the units' events, each unit's own kept in order, as pods would send them.
    lanes = [[e for e in events if e.checkpoint.id == i] for i in range(40)]
    mixed: list[UnitEvent] = []
    while any(lanes):
        lane = rng.choice([lane for lane in lanes if lane])
        mixed.append(lane.pop(0))
    start = UnitsStatus.begin(UnitKind.FILES, 50)
    whole = apply(start, mixed)
    stepwise = start
    for k in range(0, len(mixed), 7):
        stepwise = apply(stepwise, mixed[k : k + 7])
    assert whole == stepwise
    assert whole.counters.rows_read == (
        sum(u.counters.rows_read for u in whole.active)
        + sum(u.counters.rows_read for u in whole.failed)
        + 10_000 * whole.counts.completed
    )


def test_checkpoints_only_move_forward_and_ended_units_stay_ended() -> None:
    status = apply(UnitsStatus.begin(UnitKind.SHARDS, 3), [UnitCheckpointed(checkpoint(0, 500))])
    late = apply(status, [UnitCheckpointed(checkpoint(0, 400))])  # a late write of an old one
    assert late == status
    ended = apply(status, [UnitCompleted(checkpoint(0, 900, done=True)),
                           UnitFailed(checkpoint(1, 10), "boom")])
    after = apply(ended, [UnitCheckpointed(checkpoint(0, 950)), UnitStarted(checkpoint(1, 0)),
                          UnitFailed(checkpoint(0, 950), "a replaced pod's last words")])
    assert after == ended


def test_a_restart_from_the_beginning_takes_the_counters_back() -> None:
    status = apply(UnitsStatus.begin(UnitKind.FILES, 2), [UnitCheckpointed(checkpoint(0, 800))])
    assert status.counters.rows_read == 800
    restarted = apply(status, [UnitStarted(UnitCheckpoint.at_start(0, source_url=url(0)))])
    assert restarted.counters.rows_read == 0
    assert restarted.active[0].byte_offset == 0


def test_failed_units_are_listed_up_to_the_cap_and_all_are_in_the_bitmap() -> None:
    total = FAILED_LISTED_MAX + 20
    status = apply(
        UnitsStatus.begin(UnitKind.FILES, total),
        [UnitFailed(checkpoint(i, 100), LONG_REASON) for i in range(total)],
    )
    assert len(status.failed) == FAILED_LISTED_MAX
    assert status.failed_more == 20
    assert status.all_failed_ids() == set(range(total))
    assert status.progress == f"Files 0/{total}, {total} failed"
    first = status.failed[0]
    assert (first.id, first.source_url, first.byte_offset) == (0, url(0), 10_057)
    assert len(first.reason.encode()) <= REASON_MAX_BYTES
    assert first.reason.startswith("too many bad rows: 1001 > maxErrors 1000")
    assert first.reason.endswith("…")


def test_reasons_are_cut_by_bytes_at_a_character_boundary() -> None:
    assert truncate_reason("short\nreason") == "short reason"
    for text in ("é" * 300, "数" * 300, "❌" * 300, "a" + "😀" * 100):
        cut = truncate_reason(text)
        assert len(cut.encode()) <= REASON_MAX_BYTES
        assert cut.endswith("…") and len(cut) > 50


def test_an_id_outside_the_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        apply(UnitsStatus.begin(UnitKind.FILES, 3), [UnitCheckpointed(checkpoint(3, 1))])


def test_an_inconsistent_status_does_not_parse() -> None:
    wire = UnitsStatus.begin(UnitKind.FILES, 3).to_wire()
    wire["counts"]["pending"] = 2
    with pytest.raises(ValidationError, match="do not add up"):
        UnitsStatus.model_validate(wire)
    wire["counts"] = {"pending": 2, "completed": 1}
    with pytest.raises(ValidationError, match="completed bitmap"):
        UnitsStatus.model_validate(wire)


# --- phases -------------------------------------------------------------------------------------


def test_phase_rules() -> None:
    begin = UnitsStatus.begin(UnitKind.FILES, 3)
    assert (overall_phase(begin), is_finished(begin)) == (UnitState.RUNNING, False)
    empty = UnitsStatus.begin(UnitKind.FILES, 0)  # an empty prefix: nothing to do
    assert (overall_phase(empty), is_finished(empty)) == (UnitState.COMPLETED, True)
    one_failed = apply(begin, [UnitFailed(checkpoint(0, 1), "gone"),
                               UnitCompleted(checkpoint(1, 9, done=True))])
    assert overall_phase(one_failed) == UnitState.RUNNING  # a failed file stops no other
    assert overall_phase(apply(one_failed, [UnitCompleted(checkpoint(2, 9, done=True))])) == (
        UnitState.FAILED
    )
    assert overall_phase(apply(begin, [UnitCompleted(checkpoint(i, 9)) for i in range(3)])) == (
        UnitState.COMPLETED
    )


# --- size ---------------------------------------------------------------------------------------


def big_status(
    kind: UnitKind, total: int, completed: int, running: int, failed: int, seed: int
) -> UnitsStatus:
    """``completed`` units done in random order, ``running`` in progress, ``failed`` failed
    with long reasons, the rest pending; realistic URLs, versions and counters."""
    files = kind is UnitKind.FILES
    ids = list(range(total))
    random.Random(seed).shuffle(ids)
    done, run, bad = (ids[:completed], ids[completed : completed + running],
                      ids[completed + running : completed + running + failed])
    events: list[UnitEvent] = [UnitCompleted(checkpoint(i, 10_000_000, done=True, file=files))
                               for i in done]
    events += [UnitCheckpointed(checkpoint(i, 4_567_891, file=files)) for i in run]
    events += [UnitFailed(checkpoint(i, 1_234_567, file=files), LONG_REASON) for i in bad]
    return apply(UnitsStatus.begin(kind, total, bytes_total=total * 1_000_000_057), events)


def test_the_status_of_10000_files_stays_under_64_kib() -> None:
    units = big_status(UnitKind.FILES, 10_000, completed=9000, running=50, failed=100, seed=1)
    status = CsvIngestionStatus(units=units, rows_read=1, progress="90%")
    size = wire_size(status)
    # The worst this model allows: a full active list, half the units completed at random.
    worst = big_status(UnitKind.FILES, 10_000, completed=5000, running=ACTIVE_MAX, failed=500,
                       seed=2)
    worst_size = wire_size(CsvIngestionStatus(units=worst))
    print(f"\n10,000 files (9,000 done, 50 running, 100 failed): status {size} B "
          f"(completed bitmap {len(units.completed)} B, failedIds {len(units.failed_ids)} B); "
          f"5,000 done at random, {ACTIVE_MAX} running, 500 failed: {worst_size} B")
    assert units.progress == "Files 9000/10000, 100 failed"
    assert units.counts.to_wire() == {"pending": 850, "running": 50, "completed": 9000,
                                      "failed": 100}
    assert (len(units.failed), units.failed_more) == (FAILED_LISTED_MAX, 100 - FAILED_LISTED_MAX)
    assert size < STATUS_BUDGET
    assert worst_size < STATUS_BUDGET
    # The wire form is the status: it parses back to the same model.
    assert CsvIngestionStatus.model_validate(status.to_wire()) == status


def test_1000_shards() -> None:
    units = big_status(UnitKind.SHARDS, 1000, completed=700, running=16, failed=3, seed=3)
    size = wire_size(CsvIngestionStatus(units=units))
    print(f"\n1,000 shards (700 done, 16 running, 3 failed): status {size} B")
    assert units.progress == "Shards 700/1000, 3 failed"
    assert all(u.source_url is None for u in units.active)
    assert units.counters.rows_read == 700 * 10_000_000 + 16 * 4_567_891 + 3 * 1_234_567
    assert size < 16 * 1024


# --- the resource -------------------------------------------------------------------------------


def test_a_single_file_status_has_no_units_and_a_patch_can_write_them() -> None:
    assert "units" not in CsvIngestionStatus(rows_read=5).to_wire()
    units = UnitsStatus.begin(UnitKind.SHARDS, 12)
    patch: dict[str, Any] = status_patch(units=units)
    assert patch["units"]["progress"] == "Shards 0/12"
    assert status_patch(units=None) == {"units": None}


def test_the_crd_shows_units_done_of_total() -> None:
    version = crdgen.build_crd()["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Units"] == ".status.units.progress"
    units = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["units"]
    assert units["properties"]["active"]["maxItems"] == ACTIVE_MAX + FAILED_LISTED_MAX
    assert units["properties"]["failed"]["maxItems"] == FAILED_LISTED_MAX


def test_a_retry_of_10000_files_with_the_most_failed_stays_under_64_kib() -> None:
    """The largest status a retry makes: the listed failed units back in progress beside a
    full active list (a Job that failed mid-run), the ids of all failed ones in ``retried``."""
    worst = big_status(UnitKind.FILES, 10_000, completed=5000, running=ACTIVE_MAX, failed=500,
                       seed=2).model_copy(update={"plan": "9" * 64})
    retried = retry_failed(worst)
    size = wire_size(CsvIngestionStatus(units=retried))
    print(f"\n10,000 files retried ({len(retried.active)} in progress, 500 retried): {size} B")
    assert len(retried.active) == ACTIVE_MAX + FAILED_LISTED_MAX
    assert retried.counts.failed == 0 and len(retried.retried_ids()) == 500
    assert retried.counts.running + retried.counts.pending == 5000
    assert size < STATUS_BUDGET
