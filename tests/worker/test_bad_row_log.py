"""The pod's log of bad rows (ingest_worker/badrows.py): the first N one by one, then at most one
summary per interval, then the run's totals; pure, with a fake clock and a captured logger."""

from __future__ import annotations

import io
import logging

import orjson

from ingest_worker.badrows import (
    MAX_KINDS,
    OTHER,
    BadRow,
    BadRowLog,
    BadRows,
    LineBudget,
    pod_budget,
)
from ingest_worker.logs import JsonFormatter

FIELDS = "expected 3 fields, found 2"


def bad_row(line: int, reason: str = FIELDS, kind: str | None = None) -> BadRow:
    return BadRow(line, line - 1, line * 10, reason, b"", None, reason if kind is None else kind)


def chunk(rows: list[BadRow], shown: int | None = None) -> BadRows:
    """A chunk's bad rows as the core reports them, the first ``shown`` as rows (all: None)."""
    kinds: dict[str, int] = {}
    for b in rows:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    return BadRows(len(rows), rows[-1].line if rows else 0, kinds, rows[:shown])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    logger = logging.getLogger(f"test-bad-rows-{id(out)}")
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _bad(lines: range, shown: int | None = None) -> BadRows:
    return chunk([bad_row(line) for line in lines], shown)


def test_the_first_n_are_logged_with_their_line_and_reason_then_only_counted() -> None:
    logger, out = _logger()
    clock = Clock()
    log = BadRowLog(logger, LineBudget(3), every_s=10, clock=clock)
    log.add(_bad(range(2, 4)))
    log.add(_bad(range(4, 9), shown=2))  # the rest only counted: the log takes what it is given
    first = _lines(out)
    assert [e["line"] for e in first] == [2, 3, 4]
    assert first[0]["message"] == "Failed to parse row 2: expected 3 fields, found 2"
    assert first[0]["reason"] == "expected 3 fields, found 2" and first[0]["offset"] == 20
    assert log.since == {"expected 3 fields, found 2": 4}  # lines 5 to 8, not written


def test_one_summary_per_interval_with_counts_since_the_last_and_the_last_line() -> None:
    logger, out = _logger()
    clock = Clock()
    log = BadRowLog(logger, LineBudget(0), every_s=10, clock=clock)
    for line in range(2, 1002):  # a chunk per row, 1 ms apart: 1 s in all, no summary yet
        log.add(_bad(range(line, line + 1)))
        clock.now += 0.001
    assert _lines(out) == []
    clock.now += 9.5
    log.add(chunk([bad_row(1002, "column 'amount': not a float: 'x'",
                           "column 'amount': not a float")]))
    (summary,) = _lines(out)
    assert summary["bad_rows"] == 1001 and summary["last_line"] == 1002
    assert summary["by_reason"] == {"expected 3 fields, found 2": 1000,
                                    "column 'amount': not a float": 1}
    clock.now += 5.0
    log.add(_bad(range(1003, 1005)))
    log.tick()
    assert len(_lines(out)) == 1  # the next is due 10 s after the last
    clock.now += 5.0
    log.tick()
    second = _lines(out)[1]
    assert second["bad_rows"] == 2 and second["last_line"] == 1004


def test_close_writes_what_is_due_and_the_runs_totals_once() -> None:
    logger, out = _logger()
    clock = Clock()
    log = BadRowLog(logger, LineBudget(2), every_s=10, clock=clock)
    log.add(_bad(range(2, 7)))
    log.close()
    log.close()
    *ones, summary, total = _lines(out)
    assert [e["line"] for e in ones] == [2, 3]
    assert summary["bad_rows"] == 3 and summary["last_line"] == 6
    assert total["bad_rows"] == 5 and total["logged"] == 2 and total["last_line"] == 6
    assert total["by_reason"] == {"expected 3 fields, found 2": 5}


def test_a_run_without_bad_rows_writes_nothing() -> None:
    logger, out = _logger()
    log = BadRowLog(logger, LineBudget(100))
    log.add(BadRows())
    log.tick()
    log.close()
    assert out.getvalue() == ""


def test_the_budget_is_shared_by_the_runs_of_a_pod() -> None:
    logger, out = _logger()
    budget = LineBudget(3)
    BadRowLog(logger, budget).add(_bad(range(2, 4)))
    BadRowLog(logger, budget).add(_bad(range(10, 14)))
    assert [e.get("line") for e in _lines(out)] == [2, 3, 10]
    assert budget.left == 0


def test_the_pods_budget_comes_from_the_environment_once() -> None:
    import ingest_worker.badrows as badrows

    saved = badrows._pod_budget
    try:
        badrows._pod_budget = None
        assert pod_budget({"CSVKAFKA_BAD_ROWS_LOGGED": "7"}).left == 7
        assert pod_budget({"CSVKAFKA_BAD_ROWS_LOGGED": "9"}).left == 7  # read once
        badrows._pod_budget = None
        assert pod_budget({"CSVKAFKA_BAD_ROWS_LOGGED": "lots"}).left == 100
    finally:
        badrows._pod_budget = saved


def test_chunks_merge_with_rows_refused_later_in_file_order() -> None:
    enc = chunk([bad_row(2), bad_row(9)])
    refused = chunk([bad_row(5, "refused by Kafka: MSG_SIZE_TOO_LARGE", "refused by Kafka")])
    both = enc.merged(refused)
    assert (both.count, both.last_line) == (3, 9)
    assert both.kinds == {FIELDS: 2, "refused by Kafka": 1}
    assert [b.line for b in both.rows] == [2, 5, 9]  # in file order


def test_kinds_are_bounded() -> None:
    logger, out = _logger()
    clock = Clock()
    log = BadRowLog(logger, LineBudget(0), every_s=10, clock=clock)
    log.add(chunk([bad_row(i, f"expected 3 fields, found {i}")
                   for i in range(4, 4 + 2 * MAX_KINDS)]))
    assert len(log.since) == MAX_KINDS and log.since[OTHER] == MAX_KINDS + 1
    log.close()
    total = _lines(out)[-1]
    assert total["bad_rows"] == 2 * MAX_KINDS
    assert isinstance(total["by_reason"], dict) and len(total["by_reason"]) == MAX_KINDS
