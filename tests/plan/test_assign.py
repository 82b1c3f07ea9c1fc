"""Units onto the indexes of the Indexed Job: deterministic, every unit once, balanced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.plan.assign import assign, indexes_for
from ingest_worker.plan.units import WorkUnit


def units(sizes: list[int | None]) -> list[WorkUnit]:
    return [WorkUnit(i, f"s3://b/{i}.csv", "v", n) for i, n in enumerate(sizes)]


def test_largest_first_onto_the_least_loaded() -> None:
    # 8 -> index 0, 7 -> 1, 6 -> 1 (7 < 8), 5 -> 0 (8 < 13), 4 -> 0 (13 = 13: the lower index),
    # 4 -> 1: 17 and 17.
    assert assign(units([5, 8, 6, 7, 4, 4]), 2) == [[0, 1, 4], [2, 3, 5]]


def test_ties_go_by_id_and_lower_index() -> None:
    assert assign(units([10, 10, 10, 10]), 2) == [[0, 2], [1, 3]]


def test_unknown_sizes_count_as_the_mean() -> None:
    # The mean of 100 and 300 is 200: the two unknown files weigh 200 each.
    assert assign(units([100, None, 300, None]), 2) == [[0, 2], [1, 3]]
    assert assign(units([None] * 5), 2) == [[0, 2, 4], [1, 3]]  # round-robin


def test_ranges_weigh_their_length() -> None:
    us = [WorkUnit(0, "a", "v", 1000, 0, 900), WorkUnit(1, "a", "v", 1000, 900),
          WorkUnit(2, "b", "v", 500)]
    assert assign(us, 2) == [[0], [1, 2]]


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.one_of(st.none(), st.integers(0, 10**9)), max_size=60),
       indexes=st.integers(1, 12))
def test_every_unit_once_deterministic_and_within_the_greedy_bound(
    sizes: list[int | None], indexes: int
) -> None:
    us = units(sizes)
    batches = assign(us, indexes)
    assert len(batches) == indexes
    assert sorted(i for b in batches for i in b) == list(range(len(us)))
    assert all(b == sorted(b) for b in batches)
    assert assign(list(reversed(us)), indexes) == batches
    known = [n for n in sizes if n is not None]
    mean = sum(known) // len(known) if known else 1
    w = [mean if n is None else n for n in sizes]
    loads = [sum(w[i] for i in b) for b in batches]
    if w:  # no index holds more than its fair share plus the largest unit
        assert max(loads) <= sum(w) / indexes + max(w)


def test_indexes_for() -> None:
    assert indexes_for(units([1] * 10_000), 25) == 100  # not a pod per file
    assert indexes_for(units([1] * 3), 25) == 3  # not more indexes than units
    assert indexes_for([], 4) == 0
    assert assign([], 0) == []
