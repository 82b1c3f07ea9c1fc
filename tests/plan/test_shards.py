"""Record-aligned range starts on local bytes, against the core's own record boundaries."""

from __future__ import annotations

import itertools
import threading

import pytest
from csvkafka_core import cut
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.plan.shards import ReadRange, SplitDialect, check_handoff, plan_shards

COMMA, QUOTE = ord(","), ord('"')
QUOTED = SplitDialect(COMMA, QUOTE, None, quoted_newlines=True)
UNQUOTED_NEWLINES = SplitDialect(COMMA, QUOTE, None, quoted_newlines=False)


def reader(buf: bytes) -> ReadRange:
    return lambda offset, length: buf[offset:offset + length]


def record_ends(buf: bytes) -> list[int]:
    """Where each record ends, as the worker's cutter (Python's csv rules) finds them."""
    return [end for end, _, _ in cut(buf, COMMA, QUOTE, True, 1, 1)]


def expected_starts(buf: bytes, shard_bytes: int) -> list[int]:
    """The first record start after each naive boundary (past it, the next one's)."""
    ends = [e for e in record_ends(buf) if e < len(buf)]
    starts = {0}
    for b in range(shard_bytes, len(buf), shard_bytes):
        nxt = [e for e in ends if e > b]
        if nxt:
            starts.add(nxt[0])
    return sorted(starts)


plain = st.text("abc xyz019'", max_size=12)
quoted = st.text('ab,"\n\r ', max_size=30).map(lambda s: '"' + s.replace('"', '""') + '"')
record = st.lists(st.one_of(plain, quoted), min_size=1, max_size=5).map(",".join)
line = st.tuples(st.one_of(record, record, record, st.just("")), st.sampled_from(["\n", "\r\n"]))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(line, min_size=1, max_size=80))
    text = "".join(r + end for r, end in lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # a last record without its newline
    return text.encode()


@settings(max_examples=200, deadline=None)
@given(buf=csv_files(), shard_bytes=st.integers(37, 500), block_bytes=st.integers(1, 64))
def test_starts_are_the_first_record_starts_after_each_boundary(
    buf: bytes, shard_bytes: int, block_bytes: int
) -> None:
    shards = plan_shards(reader(buf), len(buf), QUOTED, shard_bytes, block_bytes=block_bytes,
                         workers=3)
    assert shards.reason is None
    assert list(shards.starts) == expected_starts(buf, shard_bytes)
    ends = set(record_ends(buf))
    assert set(shards.starts[1:]) <= ends - {len(buf)}  # every start is a record boundary
    assert all(a < b for a, b in itertools.pairwise(shards.starts))
    assert list(shards.lines) == [buf[:s].count(b"\n") + 1 for s in shards.starts]

    # Every record belongs to exactly one range, and each range is whole records: cut alone
    # (as a worker cuts its range), the ranges give the file's records, each once.
    bounds = [*shards.starts, len(buf)]
    records: list[bytes] = []
    for lo, hi in itertools.pairwise(bounds):
        part = buf[lo:hi]
        last = hi == len(buf)
        cuts = cut(part, COMMA, QUOTE, last, 1, 1)
        assert (cuts[-1][0] if cuts else 0) == len(part)  # the handoff lands on the next start
        pos = 0
        for end, _, _ in cuts:
            records.append(part[pos:end])
            pos = end
    whole_file, pos = [], 0
    for end in record_ends(buf):
        whole_file.append(buf[pos:end])
        pos = end
    assert records == whole_file


@settings(max_examples=100, deadline=None)
@given(buf=csv_files(), shard_bytes=st.integers(37, 500))
def test_without_quoted_newlines_a_start_follows_the_first_lf(buf: bytes, shard_bytes: int) -> None:
    shards = plan_shards(reader(buf), len(buf), UNQUOTED_NEWLINES, shard_bytes, block_bytes=16)
    lfs = [i + 1 for i, c in enumerate(buf) if c == 0x0A and i + 1 < len(buf)]
    expected = {0}
    for b in range(shard_bytes, len(buf), shard_bytes):
        nxt = [s for s in lfs if s > b]
        if nxt:
            expected.add(nxt[0])
    assert list(shards.starts) == sorted(expected)
    # The physical line of each start: the file's lines are kept for bad rows.
    assert shards.lines == tuple(buf.count(b"\n", 0, s) + 1 for s in shards.starts)


def test_no_quote_character_splits_on_every_lf() -> None:
    buf = b'h\n' + b'a"b\n' * 50
    shards = plan_shards(reader(buf), len(buf), SplitDialect(COMMA, None, None, True), 40)
    assert shards.starts == (0, 42, 82, 122, 162)


def test_a_record_longer_than_a_range_swallows_boundaries() -> None:
    buf = b"h\n" + b'"' + b"x\n" * 200 + b'",1\n' + b"a,b\n" * 10
    shards = plan_shards(reader(buf), len(buf), QUOTED, 50, block_bytes=8)
    long_end = buf.index(b'",1\n') + 4
    assert shards.starts == (0, long_end)  # eight boundaries inside it, one start after it
    assert list(shards.starts) == expected_starts(buf, 50)


STRAY = b"h1,h2\n" + b'a,b"c\n' + b"x,y\n" * 20 + b'"p\nq",r\n' + b"x,y\n" * 20


def test_a_quote_in_an_unquoted_field_fails_verification_and_the_file_is_not_split() -> None:
    shards = plan_shards(reader(STRAY), len(STRAY), QUOTED, 64)
    assert shards.starts == (0,)
    assert shards.reason is not None
    assert "quote inside an unquoted field" in shards.reason


def test_unverified_wrong_start_is_caught_by_the_handoff() -> None:
    shards = plan_shards(reader(STRAY), len(STRAY), QUOTED, 64, verify=False)
    ends = record_ends(STRAY)
    wrong = [s for s in shards.starts if s not in ends and s != 0]
    assert wrong, "the parity model should be fooled by the stray quote"
    # The worker of the range before (which starts on a true boundary) reads past its end to
    # finish its last record, which ends past the wrong start.
    hi = wrong[0]
    end_of_last = next(e for e in ends if e >= hi)
    message = check_handoff(end_of_last, hi)
    assert message is not None and "read twice" in message


def test_check_handoff() -> None:
    assert check_handoff(100, 100) is None
    assert "read twice" in (check_handoff(120, 100) or "")
    assert "lost" in (check_handoff(90, 100) or "")


def test_refusals_and_small_files() -> None:
    buf = b"a,b\n" * 100
    escaped = SplitDialect(COMMA, QUOTE, ord("\\"), True)
    refused = plan_shards(reader(buf), len(buf), escaped, 40)
    assert refused.starts == (0,) and "escape" in (refused.reason or "")
    # Without quoted newlines, an escape character changes nothing: every LF ends a record.
    assert len(plan_shards(reader(buf), len(buf), SplitDialect(COMMA, QUOTE, 92, False),
                           40).starts) == 10
    assert plan_shards(reader(buf), None, QUOTED, 40).reason == "the size of the file is unknown"
    assert plan_shards(reader(buf), len(buf), QUOTED, len(buf)).starts == (0,)
    with pytest.raises(ValueError):
        SplitDialect(COMMA, 0x0A, None, True)


def test_a_file_shorter_than_its_size_is_an_error() -> None:
    buf = b"a,b\n" * 100
    with pytest.raises(EOFError):
        plan_shards(reader(buf), len(buf) + 50, QUOTED, 40)


def test_ranges_are_read_in_parallel_and_bounded() -> None:
    buf = b"a,b\n" * 5000
    seen: set[int] = set()
    longest = 0
    lock = threading.Lock()

    def read_range(offset: int, length: int) -> bytes:
        nonlocal longest
        with lock:
            seen.add(threading.get_ident())
            longest = max(longest, length)
        return buf[offset:offset + length]

    shards = plan_shards(read_range, len(buf), QUOTED, 1000, block_bytes=256, workers=4)
    assert len(shards.starts) == 20
    assert longest <= 256
    assert len(seen) >= 1  # (how many threads ran is the scheduler's business)
