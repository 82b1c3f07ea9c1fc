"""Record-aligned starts of the byte ranges a huge file is cut into.

Quoted fields may hold newlines, so "the first newline after the boundary" may be inside a
record. With ``""`` escaping (a quote inside a quoted field is doubled), a newline is inside a
quoted field exactly when an odd number of quote bytes come before it in the file: every
quoted field adds an even number, and a newline is outside quotes only between fields. So:

1. naive boundaries every ``shard_bytes``;
2. the quote parity (and the newline count) of each range between two boundaries, in
   parallel, by ranged reads (``bytes.count`` runs in C at memory speed);
3. a prefix XOR of those parities: the parity of the file before each boundary;
4. from each boundary, read forward to the first LF with even parity: the byte after it is a
   record start. The search stops at the next boundary: past it, the next boundary's search
   finds the same start (a record longer than a range swallows that boundary);
5. verify: each range, cut by the core's own cutter (the worker's, Python's csv rules) from
   its start, must end exactly on the next start. A file that breaks the parity model fails
   this, and is not split (one range) rather than read wrong.

The model breaks where Python's csv does not toggle quoting on a quote byte: a quote inside an
unquoted field (``ab"c``), after a closing quote (``"a"b"``), or in the rest of a line after a
bare CR. Such a file gets wrong candidate starts, which step 5 catches before any row is read.

**With an escape character** (``\\"`` inside quotes) the parity of quote bytes says nothing
(an escaped quote does not close the field, and whether a quote is escaped depends on how
many escape characters precede it), and an escaped newline is data even outside quotes. The
exact generalisation runs csv's state machine per range for every entry state and composes
the results (a prefix scan over state maps), which needs a cutter that starts in any state;
until then such a file is not split when ``quoted_newlines`` is set.

**Without quoted newlines** (``format.quotedNewlines: false``, or no quote character, when
nothing can quote a newline) every LF ends a record: the start after a boundary is the first
LF after it. The quote analysis and the check of step 5 are skipped; the pass of step 2 still
counts the lines, so bad rows keep the file's line numbers.

**The handoff, in the worker.** A range holds whole records: the records that start in
``[start, end)``, which also end there. The worker of range k cuts its records from
``start``; the last one must end exactly at ``end`` (the next range's start). If it does not
(the file is not the one planned, or the worker's cutter disagrees with the plan), the worker
fails the unit with :func:`check_handoff`'s message rather than lose or duplicate the rows
about the boundary. The plan's step 5 makes that failure a bug, not a property of the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from csvkafka_core import cut

ReadRange = Callable[[int, int], bytes]
"""``read_range(offset, length)``: the file's bytes ``[offset, offset + length)``, fewer only at
its end. Called from several threads at once, so it must be thread-safe (``os.pread``, an S3
client's ranged GET)."""

LF = 0x0A
CR = 0x0D
_ALL = 1 << 62  # "no limit" for the cutter's chunk size: one chunk of every whole record

@dataclass(frozen=True)
class SplitDialect:
    """What of the file's dialect decides where records start (bytes, as the core takes)."""

    delimiter: int
    quote: int | None
    escape: int | None
    quoted_newlines: bool

    def __post_init__(self) -> None:
        for name, b in (("delimiter", self.delimiter), ("quote", self.quote),
                        ("escape", self.escape)):
            if b in (LF, CR):
                raise ValueError(f"the {name} cannot be a line break")


@dataclass(frozen=True)
class Shards:
    """Where the ranges of one file start, and the line number of the record at each."""

    starts: tuple[int, ...]
    """Strictly increasing, the first 0: range k is ``[starts[k], starts[k + 1])``."""
    lines: tuple[int | None, ...]
    """The physical line number (1-based) at each start; None where the plan read no pass
    over the file to count them."""
    reason: str | None = None
    """Why the file is one range although it is larger than a range, when it is."""


def whole(reason: str | None = None) -> Shards:
    """One range: the whole file."""
    return Shards((0,), (1,), reason)


def plan_shards(
    read_range: ReadRange,
    size: int | None,
    dialect: SplitDialect,
    shard_bytes: int,
    *,
    block_bytes: int = 1 << 20,
    workers: int = 8,
    verify: bool = True,
    max_record_bytes: int = 64 << 20,
) -> Shards:
    """The record-aligned starts of an uncompressed file of ``size`` bytes.

    ``block_bytes`` bounds each read (the memory of a thread); ``workers`` the reads in flight.
    ``verify`` runs step 5 (a second pass over the file); ``max_record_bytes`` is the longest
    record that step accepts (the worker's own limit).
    """
    if shard_bytes < 1 or block_bytes < 1:
        raise ValueError("shard_bytes and block_bytes must be positive")
    if size is None:
        return whole("the size of the file is unknown")
    if size <= shard_bytes:
        return whole()
    bounds = list(range(0, size, shard_bytes))  # bounds[0] = 0; the last range ends at size
    ranges = [(b, min(b + shard_bytes, size)) for b in bounds]
    by_lf = dialect.quote is None or not dialect.quoted_newlines
    if dialect.escape is not None and not by_lf:
        return whole("quoted newlines with an escape character: quote parity does not say "
                     "where records start")

    quote = None if by_lf or dialect.quote is None else bytes([dialect.quote])
    with ThreadPoolExecutor(max(1, workers)) as pool:
        # Without quotes the pass only counts lines: bad rows keep the file's line numbers.
        counts = list(pool.map(lambda r: _count(read_range, r[0], r[1], quote, block_bytes),
                               ranges[:-1]))
        parity, line = 0, 1
        entry: list[tuple[int, int, int, int]] = []  # (lo, hi, parity at lo, line at lo)
        for (lo, hi), (p, n) in zip(ranges[1:], counts, strict=True):
            parity, line = parity ^ p, line + n  # the prefix XOR (and sum)
            entry.append((lo, hi, parity, line))
        found = list(pool.map(
            lambda e: _first_start(read_range, e[0], e[1], size, quote, e[2], e[3], block_bytes),
            entry))
        shards = _dedup([s for s in found if s is not None])
        if by_lf:
            return shards
        if verify and len(shards.starts) > 1:
            pairs = itertools.pairwise(shards.starts)
            errors = pool.map(
                lambda p: _verify(read_range, p[0], p[1], dialect, block_bytes, max_record_bytes),
                pairs)
            for err in errors:
                if err is not None:
                    return whole(f"not split: {err}")
        return shards


def check_handoff(end_of_last_record: int, next_start: int) -> str | None:
    """The error of a range whose last record does not end where the next range starts.

    ``end_of_last_record`` is where the worker's cutter ended the last record that starts
    before ``next_start`` (reading past its range to finish it, if need be). None when they
    agree: then no row about the boundary is lost or read twice.
    """
    if end_of_last_record == next_start:
        return None
    if end_of_last_record > next_start:
        return (f"the record that ends at byte {end_of_last_record} runs past byte "
                f"{next_start}, where the plan starts the next range: its rows would be read "
                "twice; the file is not the one planned, or it breaks the plan's quote model")
    return (f"the records end at byte {end_of_last_record}, before byte {next_start}, where "
            "the plan starts the next range: the rows between would be lost")


def _count(
    read_range: ReadRange, lo: int, hi: int, quote: bytes | None, block_bytes: int
) -> tuple[int, int]:
    """The parity of the quote bytes (0 without a quote) and the number of LFs in
    ``[lo, hi)``."""
    parity = lines = 0
    for data in _blocks(read_range, lo, hi, block_bytes):
        if quote is not None:
            parity ^= data.count(quote) & 1
        lines += data.count(b"\n")
    return parity, lines


def _first_start(
    read_range: ReadRange, lo: int, hi: int, size: int, quote: bytes | None,
    parity: int, line: int | None, block_bytes: int,
) -> tuple[int, int | None] | None:
    """The first record start after an LF in ``[lo, hi)``, and its line: with ``quote``, after
    an LF with even quote parity (``parity`` and ``line`` are those at ``lo``)."""
    offset = lo
    # Small reads: most searches end in the first block.
    for data in _blocks(read_range, lo, hi, min(block_bytes, 1 << 16)):
        pos = 0
        while True:
            lf = data.find(b"\n", pos)
            if lf < 0:
                if quote is not None:
                    parity ^= data.count(quote, pos) & 1
                break
            start = offset + lf + 1
            if quote is None:
                return (start, None if line is None else line + 1) if start < size else None
            parity ^= data.count(quote, pos, lf) & 1
            line = None if line is None else line + 1
            if parity == 0:
                return (start, line) if start < size else None
            pos = lf + 1
        offset += len(data)
    return None


def _dedup(found: Sequence[tuple[int, int | None]]) -> Shards:
    starts: list[int] = [0]
    lines: list[int | None] = [1]
    for start, line in found:
        if start > starts[-1]:  # a record longer than a range found the same start twice
            starts.append(start)
            lines.append(line)
    return Shards(tuple(starts), tuple(lines))


def _verify(
    read_range: ReadRange, lo: int, hi: int, dialect: SplitDialect, block_bytes: int,
    max_record_bytes: int,
) -> str | None:
    """Whether the records cut from ``lo`` (as the worker cuts them) end exactly at ``hi``."""
    carry = b""
    for data in _blocks(read_range, lo, hi, block_bytes):
        buf = carry + data if carry else data
        cuts = cut(buf, dialect.delimiter, dialect.quote, False, _ALL, _ALL)
        carry = buf[cuts[-1][0]:] if cuts else buf
        if len(carry) > max_record_bytes:
            break
    if not carry:
        return None
    return (f"the record at byte {hi - len(carry)} runs past byte {hi}, where the quote parity "
            "put a record start (a quote inside an unquoted field?)")


def _blocks(read_range: ReadRange, lo: int, hi: int, block: int) -> Iterator[bytes]:
    offset = lo
    while offset < hi:
        data = read_range(offset, min(block, hi - offset))
        if not data:
            raise EOFError(f"the file ends at byte {offset}, before its planned size {hi}")
        yield data
        offset += len(data)
