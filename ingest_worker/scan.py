"""Vectorised record-boundary scan for the standard CSV dialect.

In the standard dialect (a quote inside a quoted field is doubled, no escape character) a
newline ends a record exactly when the number of quote bytes since the start of the record is
even. So, given a buffer that starts on a record boundary, one pass of numpy over the bytes finds
every record end, the physical line each record starts on, and, with the delimiters, every
record's field count. No Python code runs per row.

The reader uses it to cut blocks into chunks on record boundaries; the workers use it again on
their chunk to get per-record offsets (for event ids and checkpoints) and to validate the fast
parser's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

NL = 0x0A
CR = 0x0D
COMMA = 0x2C

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Boundaries:
    """Complete records found in a buffer that starts on a record boundary.

    ``ends[i]`` is the offset just past record i's terminating newline; ``lines[i]`` the number
    of newlines before record i's start (its physical line, relative to the buffer). Bytes after
    ``ends[-1]`` (or all of them when there is no end) are an incomplete record, or, at the end
    of the file, the final record without a newline.
    """

    ends: IntArray
    lines: IntArray
    newlines: int  # newlines in buf[:ends[-1]]
    toggles: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The quotes that open or close a quoted field (see :func:`quote_toggles`)."""
    literal_quotes: bool = False


@dataclass(frozen=True)
class Scan:
    """The reader's scan of one chunk, handed to the worker so it does not scan again: record
    ends and lines, and the quote toggles, relative to the chunk's start. Only for a chunk that
    ends on a record end and whose block had no literal quote."""

    ends: IntArray
    lines: IntArray
    toggles: IntArray


def _quote_positions(view: npt.NDArray[np.uint8], quote: int | None) -> IntArray:
    if quote is None:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(view == quote).astype(np.int64, copy=False)


def quote_toggles(
    view: npt.NDArray[np.uint8], quote: int | None, delimiter: int
) -> tuple[IntArray, bool]:
    """Positions of the quotes that open or close a quoted field, and whether any quote byte was
    a literal (a quote inside an unquoted field, or after a closing quote).

    Python's csv only opens a quoted field with a quote at the start of a field; elsewhere a
    quote is data. When every quote is where the doubled-quote model expects it (an opening
    quote after the start, a delimiter or a newline; a closing quote before a delimiter, a line
    end, the end of the buffer or a doubled quote), the quote bytes themselves alternate
    open/close and parity is exact: one vectorised check, no Python per quote. Otherwise (rare)
    one sequential pass over the quote positions only decides which quotes count.
    """
    qpos = _quote_positions(view, quote)
    if not len(qpos):
        return qpos, False
    n = len(view)
    opens, closes = qpos[0::2], qpos[1::2]
    prev = view[np.maximum(opens - 1, 0)]
    ok_open = (opens == 0) | (prev == NL) | (prev == delimiter) | (prev == quote)
    nxt = view[np.minimum(closes + 1, n - 1)]
    ok_close = (closes + 1 >= n) | (nxt == NL) | (nxt == CR) | (nxt == delimiter) | (nxt == quote)
    # (An opening quote right after a quote follows the previous, closing, quote: doubled.)
    bare_cr = _bare_cr_positions(view)
    if not len(bare_cr) and bool(ok_open.all()) and bool(ok_close.all()):
        return qpos, False
    return _toggles_sequential(view, qpos, bare_cr, quote, delimiter), True


def _bare_cr_positions(view: npt.NDArray[np.uint8]) -> IntArray:
    """CRs not followed by LF (not a CR as the buffer's last byte: its LF may follow)."""
    cr = np.flatnonzero(view == CR).astype(np.int64, copy=False)
    if not len(cr):
        return cr
    nxt = view[np.minimum(cr + 1, len(view) - 1)]
    out: IntArray = cr[(cr + 1 < len(view)) & (nxt != NL)]
    return out


def _toggles_sequential(
    view: npt.NDArray[np.uint8], qpos: IntArray, bare_cr: IntArray, quote: int | None,
    delimiter: int,
) -> IntArray:
    """Python csv's (lenient) state machine, visiting only the quote bytes and bare CRs.

    Outside a quoted field, a CR not followed by LF is an error for Python's reader, which then
    drops the rest of that physical line: quotes there open nothing.
    """
    n = len(view)
    data = view.tobytes()
    starts_field = {NL, delimiter}
    nl = np.flatnonzero(view == NL)
    events = sorted([(p, 0) for p in qpos.tolist()] + [(p, 1) for p in bare_cr.tolist()])
    out: list[int] = []
    inside = False
    skip_to = -1
    for p, is_cr in events:
        if p < skip_to:
            continue
        if is_cr:
            if not inside:
                k = int(np.searchsorted(nl, p))
                skip_to = int(nl[k]) + 1 if k < len(nl) else n
            continue
        if inside:
            if p + 1 < n and data[p + 1] == quote:
                skip_to = p + 2  # a doubled quote: data, still inside
                continue
            out.append(p)
            inside = False
        elif p == 0 or data[p - 1] in starts_field:
            out.append(p)
            inside = True
        # else: a quote inside an unquoted field (or after a closing quote) is data
    return np.asarray(out, dtype=np.int64)


def find_boundaries(
    buf: bytes | memoryview, quote: int | None, delimiter: int = COMMA
) -> Boundaries:
    """Record ends in ``buf`` (which must start on a record boundary)."""
    view = np.frombuffer(buf, dtype=np.uint8)
    toggles, literal = quote_toggles(view, quote, delimiter)
    b = _boundaries(view, toggles)
    return Boundaries(b.ends, b.lines, b.newlines, toggles, literal)


def _boundaries(view: npt.NDArray[np.uint8], toggles: IntArray) -> Boundaries:
    nl = np.flatnonzero(view == NL).astype(np.int64, copy=False)
    if len(toggles):
        # Quotes before each newline; even parity means the newline is outside quotes.
        even = (np.searchsorted(toggles, nl) & 1) == 0
        idx = np.flatnonzero(even)
    else:
        idx = np.arange(len(nl), dtype=np.int64)
    ends = nl[idx] + 1
    lines = np.empty(len(idx), dtype=np.int64)
    if len(idx):
        lines[0] = 0
        lines[1:] = idx[:-1] + 1
    newlines = int(idx[-1]) + 1 if len(idx) else 0
    return Boundaries(ends=ends, lines=lines, newlines=newlines)


def blank_mask(buf: bytes | memoryview, starts: IntArray, ends: IntArray) -> BoolArray:
    """Records that are empty lines ("\\n" or "\\r\\n"); they are skipped, not rows.

    ``ends`` here exclude nothing: a record spans buf[starts[i]:ends[i]] including its newline
    (if any).
    """
    view = np.frombuffer(buf, dtype=np.uint8)
    lens = ends - starts
    blank: BoolArray = lens == 0
    if len(view) == 0 or len(starts) == 0:
        return blank
    first = view[np.minimum(starts, len(view) - 1)]
    # "\n" alone, "\r\n", or (final record without newline) a lone "\r".
    blank |= (lens == 1) & ((first == NL) | (first == CR))
    if np.any(lens == 2):
        second = view[np.minimum(starts + 1, len(view) - 1)]
        blank |= (lens == 2) & (first == CR) & (second == NL)
    return blank


@dataclass(frozen=True)
class ChunkRecords:
    """Every record of a chunk (a buffer that starts and ends on record boundaries).

    Blank lines are dropped. ``starts``/``ends`` are offsets in the chunk (``ends`` include the
    line terminator), ``lines`` the physical line of each record relative to the chunk start,
    ``fields`` the number of fields (delimiters outside quotes + 1), ``open_quote`` whether the
    last record ends inside a quoted field (only possible at the end of the file).
    """

    starts: IntArray
    ends: IntArray
    lines: IntArray
    fields: IntArray | None
    """Per-record field counts; None when only the total was asked for."""
    open_quote: bool
    delimiters: int
    """Delimiters outside quotes in the whole chunk."""
    keep: BoolArray | None = None
    """Which of all records (blank lines included) are kept; None when all are."""
    literal_quotes: bool = False
    """Some quote byte is data (inside an unquoted field): the fast engine would disagree."""
    doubled_quotes: bool = True
    """Two quote bytes in a row somewhere (an escaped quote, or an empty quoted field)."""

    def __len__(self) -> int:
        return len(self.starts)


def chunk_records(
    buf: bytes, quote: int | None, delimiter: int, per_record_fields: bool = True,
    scan: Scan | None = None,
) -> ChunkRecords:
    """Splits a whole chunk into records, with their lines and field counts.

    With ``per_record_fields=False`` only the total number of delimiters is counted (cheaper):
    enough for the fast path, whose engine rejects any record with too many fields, so a right
    total means no record has too few either. ``scan``, the reader's, saves scanning again.
    """
    view = np.frombuffer(buf, dtype=np.uint8)
    if scan is not None and len(scan.ends) and int(scan.ends[-1]) == len(buf):
        qpos, literal_quotes = scan.toggles, False
        b = Boundaries(scan.ends, scan.lines, 0)
    else:
        qpos, literal_quotes = quote_toggles(view, quote, delimiter)
        b = _boundaries(view, qpos)
    ends = b.ends
    lines = b.lines
    last_end = int(ends[-1]) if len(ends) else 0
    open_quote = False
    if last_end < len(buf):  # final record without a newline (end of file)
        ends = np.append(ends, len(buf))
        lines = np.append(lines, b.newlines)
        if len(qpos):
            open_quote = bool((len(qpos) - int(np.searchsorted(qpos, last_end))) & 1)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1]
    keep = ~blank_mask(buf, starts, ends)
    fields: IntArray | None = None
    is_delim = view == delimiter
    if per_record_fields:
        dpos = np.flatnonzero(is_delim).astype(np.int64, copy=False)
        if len(qpos):
            dpos = dpos[(np.searchsorted(qpos, dpos) & 1) == 0]
        rec_of_delim = np.searchsorted(ends, dpos, side="right")
        fields = np.bincount(rec_of_delim, minlength=len(ends))[: len(ends)].astype(np.int64) + 1
        ndelim = len(dpos)
    else:
        # Delimiters in total, less those between an opening quote and its closing quote.
        ndelim = int(np.count_nonzero(is_delim)) - _delimiters_quoted(is_delim, qpos)
    doubled = bool(len(qpos) > 1 and np.any(qpos[1:] - qpos[:-1] == 1))
    if keep.all():
        return ChunkRecords(starts, ends, lines, fields, open_quote, ndelim,
                            literal_quotes=literal_quotes, doubled_quotes=doubled)
    kept = None if fields is None else fields[keep]
    return ChunkRecords(starts[keep], ends[keep], lines[keep], kept, open_quote, ndelim, keep,
                        literal_quotes, doubled)


def _delimiters_quoted(is_delim: BoolArray, toggles: IntArray) -> int:
    """Delimiter bytes inside quoted fields (between each opening quote and its closing one)."""
    if not len(toggles):
        return 0
    opens = toggles[0::2]
    closes = toggles[1::2]
    if len(opens) > len(closes):  # the last quoted field runs to the end (open quote at EOF)
        closes = np.append(closes, len(is_delim))
    lens = closes - opens
    total = int(lens.sum())
    if total > len(is_delim) // 4:  # mostly quoted: one pass over the positions of delimiters
        dpos = np.flatnonzero(is_delim)
        at = np.searchsorted(dpos, np.stack([opens, closes], axis=1).ravel())
        return int((at[1::2] - at[0::2]).sum())
    # Few quoted bytes: look at those only.
    first = np.cumsum(lens) - lens
    idx = np.repeat(opens - first, lens) + np.arange(total)
    return int(np.count_nonzero(is_delim[idx]))
