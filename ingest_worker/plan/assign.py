"""Which index of the Indexed Job owns which work units.

Deterministic: the same plan and the same number of indexes give the same batches, so a pod
restarted for index i (``JOB_COMPLETION_INDEX``) finds the same units, and their checkpoints.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ingest_worker.plan.units import WorkUnit

# Indexes per pod. One index per unit would start a pod per file (seconds each: 10,000 files
# must not mean 10,000 pods); one index per pod leaves the whole run waiting on the slowest
# batch when sizes were guessed wrong (unknown sizes, a slow store). With four per pod a pod
# that finishes early takes the next index, so the tail is about a quarter of one pod's share.
INDEXES_PER_POD = 4


def indexes_for(units: Sequence[WorkUnit], pods: int) -> int:
    """The Job's ``completions`` (its ``parallelism`` is ``pods``); 0 when there is no unit
    (no Job: the run has nothing to read)."""
    if pods < 1:
        raise ValueError("pods must be at least 1")
    return min(len(units), pods * INDEXES_PER_POD)


def assign(units: Sequence[WorkUnit], indexes: int) -> list[list[int]]:
    """The unit ids of each index, each list in id order.

    Largest first onto the least loaded index (by bytes; ties by the lower index), units of
    equal size by id: within 4/3 of the best split (Graham's bound for this greedy rule). A
    unit of unknown size counts as the mean of the known ones (1 byte if none is known, which
    deals them round-robin).
    """
    if indexes < 1:
        if units:
            raise ValueError("indexes must be at least 1")
        return []
    known = [n for n in (u.length for u in units) if n is not None]
    mean = sum(known) // len(known) if known else 1
    weight = {u.id: (u.length if u.length is not None else mean) for u in units}
    batches: list[list[int]] = [[] for _ in range(indexes)]
    heap = [(0, i) for i in range(indexes)]  # (bytes so far, index): already a heap
    for uid in sorted(weight, key=lambda uid: (-weight[uid], uid)):
        load, i = heapq.heappop(heap)
        batches[i].append(uid)
        heapq.heappush(heap, (load + weight[uid], i))
    # The order a pod reads its units in does not change when it finishes: id order keeps a
    # file's ranges together.
    return [sorted(b) for b in batches]
